"""Caffe's weight fillers (include/caffe/filler.hpp), reproduced rule for rule.

`fill_(tensor, filler, generator)` fills `tensor` in place and returns it. Random numbers are
drawn on the CPU from the given torch.Generator, so a seed gives the same blob on CPU and CUDA;
the result is then copied into the tensor wherever it lives.
"""

import math

import torch

from lrcn_proto import caffe_pb2

_VarianceNorm = caffe_pb2.FillerParameter.VarianceNorm


def _legacy_dim(shape, index):
    # Blob::LegacyShape: an axis beyond the blob's rank reads as 1. Caffe's num() / channels()
    # go through it, so a 1-D bias blob has channels() == 1.
    return shape[index] if index < len(shape) else 1


def _fan_n(shape, filler):
    """The `n` of xavier / msra: fan_in, fan_out or their mean, as filler.hpp computes it."""
    count = math.prod(shape)
    # Caffe stores both fans in ints, so these are integer divisions.
    fan_in = count // _legacy_dim(shape, 0)
    fan_out = count // _legacy_dim(shape, 1)
    if filler.variance_norm == _VarianceNorm.Value("AVERAGE"):
        return (fan_in + fan_out) / 2.0
    if filler.variance_norm == _VarianceNorm.Value("FAN_OUT"):
        return float(fan_out)
    return float(fan_in)


def _uniform(shape, low, high, generator, dtype):
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=dtype)


def _gaussian(shape, mean, std, generator, dtype):
    return mean + std * torch.randn(shape, generator=generator, dtype=dtype)


def _constant(shape, filler, generator, dtype):
    return torch.full(shape, filler.value, dtype=dtype)


def _uniform_filler(shape, filler, generator, dtype):
    return _uniform(shape, filler.min, filler.max, generator, dtype)


def _gaussian_filler(shape, filler, generator, dtype):
    values = _gaussian(shape, filler.mean, filler.std, generator, dtype)
    if filler.sparse >= 0:
        # filler.hpp divides by shape(0) (the number of outputs of an InnerProduct weight),
        # although its comment talks about non-zeros per output: follow the code, not the
        # comment, so that a seed-matched blob has the same density as Caffe's.
        probability = filler.sparse / shape[0]
        if probability > 1:
            raise ValueError(f"gaussian filler: sparse {filler.sparse} exceeds shape[0] = "
                             f"{shape[0]} (Caffe's Bernoulli probability must be <= 1)")
        mask = torch.rand(shape, generator=generator, dtype=dtype) < probability
        values = values * mask.to(dtype)
    return values


def _positive_unitball(shape, filler, generator, dtype):
    values = torch.rand(shape, generator=generator, dtype=dtype)
    # Each of the num() items (axis 0) is divided by its own sum over every other axis.
    rows = values.reshape(_legacy_dim(shape, 0), -1)
    return (rows / rows.sum(dim=1, keepdim=True)).reshape(shape)


def _xavier(shape, filler, generator, dtype):
    scale = math.sqrt(3.0 / _fan_n(shape, filler))
    return _uniform(shape, -scale, scale, generator, dtype)


def _msra(shape, filler, generator, dtype):
    std = math.sqrt(2.0 / _fan_n(shape, filler))
    return _gaussian(shape, 0.0, std, generator, dtype)


def _bilinear(shape, filler, generator, dtype):
    if len(shape) != 4:
        raise ValueError(f"bilinear filler: blob must be 4-D, got shape {tuple(shape)}")
    height, width = shape[2], shape[3]
    if height != width:
        raise ValueError(f"bilinear filler: filter must be square, got {height} x {width}")
    # filler.hpp: f = ceil(K / 2), c = (2f - 1 - f % 2) / (2f); weight(y, x) =
    # (1 - |x / f - c|) * (1 - |y / f - c|), the same K x K kernel for every (out, in) pair.
    f = math.ceil(width / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    axis = torch.arange(width, dtype=torch.float64)
    profile = 1 - (axis / f - c).abs()
    kernel = profile[:, None] * profile[None, :]
    return kernel.to(dtype).expand(shape).clone()


_FILLERS = {
    "constant": _constant,
    "uniform": _uniform_filler,
    "gaussian": _gaussian_filler,
    "positive_unitball": _positive_unitball,
    "xavier": _xavier,
    "msra": _msra,
    "bilinear": _bilinear,
}


def fill_(tensor, filler, generator):
    """Fill `tensor` in place as Caffe's GetFiller(filler)->Fill(blob) would; returns it.

    `filler` is a caffe_pb2.FillerParameter; `generator` a CPU torch.Generator.
    """
    make = _FILLERS.get(filler.type)
    if make is None:
        raise ValueError(f"unknown filler type {filler.type!r}; "
                         f"allowed: {', '.join(sorted(_FILLERS))}")
    if filler.type != "gaussian" and filler.sparse != -1:
        # Every filler but gaussian CHECKs sparse == -1.
        raise ValueError(f"filler {filler.type!r} does not support sparse "
                         f"(got sparse: {filler.sparse})")
    if filler.sparse < -1:
        raise ValueError(f"gaussian filler: sparse must be >= -1, got {filler.sparse}")
    shape = tuple(tensor.shape)
    if tensor.numel() == 0:
        return tensor
    # Sample in the blob's own precision (float32 blobs draw float32 numbers like Caffe's
    # float nets); integer blobs are not something Caffe fills, fall back to float32.
    dtype = tensor.dtype if tensor.dtype.is_floating_point else torch.float32
    values = make(shape, filler, generator, dtype)
    with torch.no_grad():
        tensor.copy_(values)
    return tensor
