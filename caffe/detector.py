"""pycaffe's Detector (R-CNN window detection with selective search): refused here."""

from ._caffe import unsupported


class Detector:
    def __init__(self, *args, **kwargs):
        raise unsupported("caffe.Detector", "R-CNN window detection is not provided; crop the "
                          "windows yourself and use caffe.Net.forward_all or caffe.Classifier")
