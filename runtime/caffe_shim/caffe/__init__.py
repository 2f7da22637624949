"""A minimal stand-in for pycaffe's `caffe` module, for Caffe Python layers run by lrcn.

User layer modules written for Caffe start with `import caffe` and subclass `caffe.Layer`;
runtime.python_layer makes this module importable as `caffe` when no real pycaffe is installed
(or when LRCN_CAFFE_SHIM=1 asks for it). It provides only what a Python layer needs from its
base class: `Layer`, and the phase constants `TRAIN` / `TEST` to compare `self.phase` with.
Nothing else of pycaffe (caffe.io, caffe.Net, ...) is here.
"""

TRAIN = 0
TEST = 1


class Layer:
    """Base class of Caffe Python layers.

    The runtime constructs the layer with its LayerParameter (as pycaffe does), sets
    `self.param_str` and `self.phase`, then calls setup(bottom, top) and, before every forward,
    reshape(bottom, top); backward(top, propagate_down, bottom) runs when gradients flow.
    Blobs have `.data` / `.diff` (numpy arrays), `.reshape(*shape)`, `.shape`, `.count`,
    `.num`, `.channels`, `.height`, `.width`.
    """

    def __init__(self, param=None):
        self.param_str = ""
        self.phase = TRAIN

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        raise NotImplementedError(f"{type(self).__name__} defines no forward(bottom, top)")

    def backward(self, top, propagate_down, bottom):
        pass
