"""Holds `caffe/`, a minimal stand-in for pycaffe's module (see caffe/__init__.py).

runtime.python_layer appends this directory to sys.path only when no real `caffe` module is
importable (or when LRCN_CAFFE_SHIM=1), so that user layers' `import caffe` works.
"""
