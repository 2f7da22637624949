"""Caffe weight files: .caffemodel (binary NetParameter with blobs) and .binaryproto (BlobProto).

Reading follows Caffe's CopyTrainedLayersFrom: layers match by name, layers absent from the file
keep their fillers, layers of the file absent from the net are ignored, a blob-count or shape
mismatch is an error naming the layer and both shapes. Legacy blobs (num/channels/height/width,
double_data) and legacy V1 `layers` read too.
"""

import math

import numpy as np
from google.protobuf.message import DecodeError

from compiler import files
from compiler.errors import CompileError
from lrcn_proto import caffe_pb2


# Blob::Reshape's limit on the number of axes (kMaxBlobAxes in blob.hpp).
MAX_BLOB_AXES = 32
_LEGACY_DIMS = ("num", "channels", "height", "width")


def blob_shape(blob):
    """A BlobProto's shape as Caffe's Blob::FromProto reads it: the legacy 4-D num / channels /
    height / width when any of them is set, else `shape.dim`. No dims at all is a 0-axis blob
    holding one value: Caffe writes a scalar such as PReLU's channel_shared slope that way,
    with no shape field."""
    if any(blob.HasField(f) for f in _LEGACY_DIMS):
        return (blob.num, blob.channels, blob.height, blob.width)
    return tuple(int(d) for d in blob.shape.dim)


def blob_to_array(blob, path, what="the blob"):
    """BlobProto -> numpy array (float32 from `data`, float64 from `double_data`), or one
    CompileError naming the file when the shape is impossible or the values do not fill it."""
    shape = blob_shape(blob)
    if len(shape) > MAX_BLOB_AXES:
        raise CompileError(f"{what} has {len(shape)} axes; Caffe allows at most "
                           f"{MAX_BLOB_AXES}", str(path))
    if any(d < 0 for d in shape):
        raise CompileError(f"{what} has a negative dimension in its shape {list(shape)}",
                           str(path))
    values = blob.double_data if len(blob.double_data) else blob.data
    expected = math.prod(shape)     # Python ints: a damaged shape cannot overflow the count
    if len(values) != expected:
        raise CompileError(f"{what} holds {len(values)} values but its shape {list(shape)} "
                           f"needs {expected}", str(path))
    dtype = np.float64 if len(blob.double_data) else np.float32
    return np.asarray(values, dtype=dtype).reshape(shape)


def blob_for_shape(blob, target_shape, path, what):
    """The values of a stored blob for a tensor of `target_shape`, checked as Caffe's
    Blob::ShapeEquals checks them; a mismatch is one error naming the file and both shapes."""
    if not shapes_match(blob, target_shape):
        raise CompileError(f"{what}: shape mismatch: the file has {list(blob_shape(blob))}, "
                           f"the net needs {list(target_shape)}", str(path))
    return blob_to_array(blob, path, what).reshape(tuple(target_shape))


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
    if not any(source_blob.HasField(f) for f in _LEGACY_DIMS):
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


def read_solver_state(path):
    """A binary .solverstate -> SolverState. Its learned_net must be a file name: protobuf hands
    back bytes for a string that is not UTF-8, which only a damaged file holds."""
    state = read_binary_message(path, caffe_pb2.SolverState(), ".solverstate")
    if not isinstance(state.learned_net, str):
        raise CompileError("damaged .solverstate: learned_net is not a file name (not UTF-8 "
                           "text)", str(path))
    return state


def read_blob_file(path):
    """A .binaryproto (one BlobProto, e.g. a mean image) -> numpy array."""
    blob = read_binary_message(path, caffe_pb2.BlobProto(), ".binaryproto")
    return blob_to_array(blob, path)


def write_blob_file(path, array):
    write_bytes_atomically(path, array_to_blob(array).SerializeToString())


def write_bytes_atomically(path, data):
    """Write a file so that a crash leaves the old file or the new one, never a torn one."""
    files.write_bytes_atomically(path, data)
