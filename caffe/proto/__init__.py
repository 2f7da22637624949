"""`caffe.proto.caffe_pb2` is lrcn_proto's generated module (BVLC caffe.proto's messages, field
numbers and defaults), the same module object, so messages pass freely between the two names."""

import sys

from lrcn_proto import caffe_pb2

sys.modules[__name__ + ".caffe_pb2"] = caffe_pb2

__all__ = ["caffe_pb2"]
