"""Caffe-compatible protobuf schema (package lrcn_caffe) and its generated module."""
from . import caffe_pb2
