"""caffe.io: pycaffe's image loading, resizing, oversampling, input Transformer and the
conversions between arrays and Caffe's BlobProto / Datum messages.

Differences from BVLC's io.py (which uses scikit-image): images are decoded with Pillow (EXIF
orientation applied); resize_image interpolates with pixel centres aligned and edges
clamped, without anti-aliasing (interp_order 0 nearest or 1 bilinear; other orders are
refused); datum_to_array also decodes encoded (JPEG / PNG) Datums.
"""

import numpy as np

from lrcn_proto import caffe_pb2
from runtime import transform
from runtime.weights import blob_shape

from ._caffe import unsupported

# scikit-image's rgb2gray weights (ITU-R BT.709), which pycaffe's load_image(color=False) uses.
_LUMA = np.array([0.2125, 0.7154, 0.0721])


# --- proto / datum / ndarray conversion -----------------------------------------------------

def blobproto_to_array(blob, return_diff=False):
    """A BlobProto -> its data (or diff) as a float64 array of the blob's shape (the legacy
    num / channels / height / width when those are set)."""
    values = np.array(blob.diff if return_diff else blob.data)
    return values.reshape(blob_shape(blob))


def array_to_blobproto(arr, diff=None):
    """An N-d array (and optionally its diff, same shape) -> BlobProto with `shape`."""
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(int(d) for d in arr.shape)
    blob.data.extend(np.asarray(arr).astype(float).flat)
    if diff is not None:
        blob.diff.extend(np.asarray(diff).astype(float).flat)
    return blob


def arraylist_to_blobprotovector_str(arraylist):
    """A list of arrays -> a serialized BlobProtoVector."""
    vector = caffe_pb2.BlobProtoVector()
    vector.blobs.extend([array_to_blobproto(arr) for arr in arraylist])
    return vector.SerializeToString()


def blobprotovector_str_to_arraylist(serialized):
    """A serialized BlobProtoVector -> a list of arrays."""
    vector = caffe_pb2.BlobProtoVector()
    vector.ParseFromString(serialized)
    return [blobproto_to_array(blob) for blob in vector.blobs]


def array_to_datum(arr, label=None):
    """A C x H x W array -> Datum: uint8 arrays as bytes in `data`, others as `float_data`."""
    if arr.ndim != 3:
        raise ValueError(f"array_to_datum needs a 3-d (channels x height x width) array, got "
                         f"shape {arr.shape}")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = arr.shape
    if arr.dtype == np.uint8:
        datum.data = arr.tobytes()
    else:
        datum.float_data.extend(arr.astype(float).flat)
    if label is not None:
        datum.label = label
    return datum


def datum_to_array(datum):
    """A Datum -> C x H x W array (uint8 from `data`, float64 from `float_data`); an encoded
    Datum is decoded as stored (BGR, like Caffe's DecodeDatumNative). The label is not
    returned (read datum.label)."""
    if datum.encoded:
        image = transform.decode_image(bytes(datum.data), color=None)
        return np.ascontiguousarray(image.transpose(2, 0, 1))
    shape = (datum.channels, datum.height, datum.width)
    if len(datum.data):
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(shape).copy()
    return np.array(datum.float_data).astype(float).reshape(shape)


# --- pre-processing ---------------------------------------------------------------------------

class Transformer:
    """Prepare images for a net's input blobs: resize, transpose (H x W x K -> K x H x W),
    channel swap (RGB -> BGR), raw scale, mean subtraction, input scale, in that order.

    inputs: {input blob name: its shape (N x K x H x W)}.
    """

    def __init__(self, inputs):
        self.inputs = inputs
        self.transpose = {}
        self.channel_swap = {}
        self.raw_scale = {}
        self.mean = {}
        self.input_scale = {}

    def _check_input(self, in_):
        if in_ not in self.inputs:
            raise KeyError(f"{in_} is not one of the net inputs: {self.inputs}")

    def preprocess(self, in_, data):
        """An H' x W' x K image -> the K x H x W float32 array the net's input takes."""
        self._check_input(in_)
        caffe_in = data.astype(np.float32, copy=False)
        transpose = self.transpose.get(in_)
        channel_swap = self.channel_swap.get(in_)
        raw_scale = self.raw_scale.get(in_)
        mean = self.mean.get(in_)
        input_scale = self.input_scale.get(in_)
        in_dims = tuple(self.inputs[in_][2:])
        if tuple(caffe_in.shape[:2]) != in_dims:
            caffe_in = resize_image(caffe_in, in_dims)
        if transpose is not None:
            caffe_in = caffe_in.transpose(transpose)
        if channel_swap is not None:
            caffe_in = caffe_in[channel_swap, :, :]
        if raw_scale is not None:
            caffe_in *= raw_scale
        if mean is not None:
            caffe_in -= mean
        if input_scale is not None:
            caffe_in *= input_scale
        return caffe_in

    def deprocess(self, in_, data):
        """Undo preprocess (except the resize)."""
        self._check_input(in_)
        decaf_in = data.copy().squeeze()
        transpose = self.transpose.get(in_)
        channel_swap = self.channel_swap.get(in_)
        raw_scale = self.raw_scale.get(in_)
        mean = self.mean.get(in_)
        input_scale = self.input_scale.get(in_)
        if input_scale is not None:
            decaf_in /= input_scale
        if mean is not None:
            decaf_in += mean
        if raw_scale is not None:
            decaf_in /= raw_scale
        if channel_swap is not None:
            decaf_in = decaf_in[np.argsort(channel_swap), :, :]
        if transpose is not None:
            decaf_in = decaf_in.transpose(np.argsort(transpose))
        return decaf_in

    def set_transpose(self, in_, order):
        """The order of dimensions, e.g. (2, 0, 1) turns H x W x K into K x H x W."""
        self._check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise ValueError("Transpose order needs to have the same number of dimensions as "
                             "the input.")
        self.transpose[in_] = order

    def set_channel_swap(self, in_, order):
        """The channel order after transposing, e.g. (2, 1, 0) for RGB -> BGR."""
        self._check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise ValueError("Channel swap needs to have the same number of dimensions as the "
                             "input channels.")
        self.channel_swap[in_] = order

    def set_raw_scale(self, in_, scale):
        """Multiply the raw input by `scale` (255 for models trained on [0, 255] pixels)."""
        self._check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_, mean):
        """The mean to subtract: per channel (K,) or elementwise (K x H x W, resized to the
        input when its size differs)."""
        self._check_input(in_)
        mean_shape = mean.shape
        if mean.ndim == 1:
            if mean_shape[0] != self.inputs[in_][1]:
                raise ValueError("Mean channels incompatible with input.")
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            if len(mean_shape) == 2:
                mean_shape = (1,) + mean_shape
                mean = mean.reshape(mean_shape)
            if len(mean_shape) != 3:
                raise ValueError("Mean shape invalid")
            in_shape = tuple(self.inputs[in_][1:])
            if tuple(mean_shape) != in_shape:
                # (pycaffe scales to [0, 1] around the resize, which linear interpolation
                # does not need.)
                mean = resize_image(mean.transpose((1, 2, 0)),
                                    in_shape[1:]).transpose((2, 0, 1))
        self.mean[in_] = mean

    def set_input_scale(self, in_, scale):
        """Multiply the preprocessed input by `scale` (after the mean is subtracted)."""
        self._check_input(in_)
        self.input_scale[in_] = scale


# --- image I/O --------------------------------------------------------------------------------

def load_image(filename, color=True):
    """An image file -> float32 H x W x 3 RGB (color) or H x W x 1 intensity, in [0, 1]."""
    image = transform.decode_image(str(filename), color=None)     # BGR(A), as stored
    if image.shape[2] >= 3:
        rgb = image[:, :, 2::-1].astype(np.float32) / 255.0
        if color:
            return np.ascontiguousarray(rgb)
        return (rgb @ _LUMA).astype(np.float32)[:, :, np.newaxis]
    gray = image[:, :, :1].astype(np.float32) / 255.0
    return np.tile(gray, (1, 1, 3)) if color else gray


def resize_image(im, new_dims, interp_order=1):
    """Resize an H x W x K array to new_dims (height, width): interp_order 1 bilinear, 0
    nearest; returns float32."""
    im = np.asarray(im)
    height, width = (int(d) for d in new_dims)
    if interp_order not in (0, 1):
        raise unsupported(f"caffe.io.resize_image(interp_order={interp_order})",
                          "only 0 (nearest) and 1 (bilinear) are provided")
    rows = _axis_taps(im.shape[0], height, interp_order)
    cols = _axis_taps(im.shape[1], width, interp_order)
    resized = _interpolate(im.astype(np.float64), rows, axis=0)
    resized = _interpolate(resized, cols, axis=1)
    return resized.astype(np.float32)


def _axis_taps(source, target, interp_order):
    """Source indices and weights along one axis, output pixel centres mapped onto input
    pixel centres, clamped to the edge."""
    position = (np.arange(target) + 0.5) * (source / target) - 0.5
    if interp_order == 0:
        nearest = np.clip(np.floor(position + 0.5), 0, source - 1).astype(np.int64)
        return nearest, nearest, np.zeros(target)
    position = np.clip(position, 0, source - 1)
    first = np.floor(position).astype(np.int64)
    return first, np.minimum(first + 1, source - 1), position - first


def _interpolate(array, taps, axis):
    first, second, fraction = taps
    shape = [1] * array.ndim
    shape[axis] = -1
    fraction = fraction.reshape(shape)
    return (np.take(array, first, axis=axis) * (1 - fraction)
            + np.take(array, second, axis=axis) * fraction)


def oversample(images, crop_dims):
    """The four corner crops, the centre crop and their mirrors of each H x W x K image:
    a (10 N) x h x w x K float32 array."""
    im_shape = np.array(images[0].shape)
    crop_dims = np.array(crop_dims)
    im_center = im_shape[:2] / 2.0
    h_indices = (0, im_shape[0] - crop_dims[0])
    w_indices = (0, im_shape[1] - crop_dims[1])
    crops_ix = np.empty((5, 4), dtype=int)
    current = 0
    for i in h_indices:
        for j in w_indices:
            crops_ix[current] = (i, j, i + crop_dims[0], j + crop_dims[1])
            current += 1
    crops_ix[4] = np.tile(im_center, (1, 2)) + np.concatenate([-crop_dims / 2.0,
                                                                crop_dims / 2.0])
    crops_ix = np.tile(crops_ix, (2, 1))
    crops = np.empty((10 * len(images), crop_dims[0], crop_dims[1], im_shape[-1]),
                     dtype=np.float32)
    index = 0
    for im in images:
        for crop in crops_ix:
            crops[index] = im[crop[0]:crop[2], crop[1]:crop[3], :]
            index += 1
        crops[index - 5:index] = crops[index - 5:index, :, ::-1, :]   # the mirrors
    return crops
