"""Caffe weight files: .caffemodel (binary NetParameter with blobs) and .binaryproto (BlobProto).

Reading follows Caffe's CopyTrainedLayersFrom: layers match by name, layers absent from the file
keep their fillers, layers of the file absent from the net are ignored, a blob-count or shape
mismatch is an error naming the layer and both shapes. Legacy blobs (num/channels/height/width,
double_data) and legacy V1 `layers` read too.
"""

import numpy as np
from google.protobuf.message import DecodeError

from compiler import files
from compiler.errors import CompileError
from lrcn_proto import caffe_pb2


def blob_shape(blob):
    """A BlobProto's shape: `shape.dim`, else the legacy 4-D num/channels/height/width."""
    if blob.HasField("shape"):
        return tuple(int(d) for d in blob.shape.dim)
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        return (blob.num, blob.channels, blob.height, blob.width)
    return (len(blob.data) or len(blob.double_data),)


def blob_to_array(blob, source="blob"):
    """BlobProto -> numpy array (float32 from `data`, float64 from `double_data`)."""
    shape = blob_shape(blob)
    if len(blob.double_data):
        values = np.asarray(blob.double_data, dtype=np.float64)
    else:
        values = np.asarray(blob.data, dtype=np.float32)
    expected = int(np.prod(shape)) if shape else 1
    if values.size != expected:
        raise CompileError(f"{source}: holds {values.size} values but its shape {list(shape)} "
                           f"needs {expected}")
    return values.reshape(shape)


def array_to_blob(array):
    """numpy array -> BlobProto with `shape` and float32 `data` (what Caffe writes)."""
    blob = caffe_pb2.BlobProto()
    array = np.asarray(array)
    blob.shape.dim.extend(int(d) for d in array.shape)
    blob.data.extend(np.ascontiguousarray(array, dtype=np.float32).ravel().tolist())
    return blob


def shapes_match(source_blob, target_shape):
    """Caffe's Blob::ShapeEquals: a legacy 4-D source matches a target of up to 4 axes whose
    shape, padded with leading 1s to 4 axes, is the same (an InnerProduct weight stored 1x1xMxK)."""
    target_shape = tuple(target_shape)
    if source_blob.HasField("shape"):
        return blob_shape(source_blob) == target_shape
    if len(target_shape) > 4:
        return False
    padded = (1,) * (4 - len(target_shape)) + target_shape
    return blob_shape(source_blob) == padded


def read_binary_message(path, message, what):
    """Parse a binary protobuf file into `message`: one clear error naming the file when it is
    missing or is not that kind of file (a text .prototxt given by mistake is recognised)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise CompileError(f"cannot read {what}: {error.strerror}", str(path)) from None
    try:
        message.ParseFromString(data)
    except DecodeError:
        hint = None
        if data.lstrip()[:5] in (b"name:", b"layer"):
            hint = "this looks like a text .prototxt net definition, not a binary file"
        raise CompileError(f"not a Caffe {what} file (binary {type(message).__name__} "
                           "expected)", str(path), hint=hint) from None
    return message


def read_net_file(path):
    """A binary .caffemodel -> NetParameter."""
    return read_binary_message(path, caffe_pb2.NetParameter(), ".caffemodel")


def layers_with_blobs(net):
    """(name, [BlobProto, ...]) for each layer of a weights file, current or V1 form."""
    return [(layer.name, list(layer.blobs)) for layer in list(net.layer) + list(net.layers)
            if len(layer.blobs)]


def read_blob_file(path):
    """A .binaryproto (one BlobProto, e.g. a mean image) -> numpy array."""
    blob = read_binary_message(path, caffe_pb2.BlobProto(), ".binaryproto")
    return blob_to_array(blob, str(path))


def write_blob_file(path, array):
    write_bytes_atomically(path, array_to_blob(array).SerializeToString())


def write_bytes_atomically(path, data):
    """Write a file so that a crash leaves the old file or the new one, never a torn one."""
    files.write_bytes_atomically(path, data)
