"""PyTorch runtime for compiled Caffe nets: Caffe-exact layers, a pycaffe-style Net, solvers."""
