"""Vision and parameterised layers: Convolution, Deconvolution, Pooling, LRN, InnerProduct,
Embed, BatchNorm, Scale, Bias, MVN, Crop, SPP, Im2col.

Each unit follows the BVLC Caffe layer of the same name (src/caffe/layers/*_layer.cpp) where
it and the nearest PyTorch function disagree. Blob shapes come from the compiler
(`layer.param_shapes`) and output sizes from `layer.top_shapes`; nothing here restates a shape
rule. Everything is device-agnostic: blobs are made on the CPU and the Net moves them.
"""

import copy
import itertools
import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from lrcn_proto import caffe_pb2
from runtime import gemm
from runtime.layers.base import CaffeLayer, LayerError
from runtime.layers.registry import register

# Caffe's -FLT_MAX: the value a MAX pooling window with no input element produces.
_NEG_FLT_MAX = torch.finfo(torch.float32).min


def _broadcast(blob, num_axes, axis):
    """View `blob` (covering axes axis .. axis + blob.dim() - 1) so it broadcasts over a
    `num_axes`-axis tensor, as Caffe's outer_dim x blob x inner_dim loops do."""
    trailing = num_axes - axis - blob.dim()
    return blob.reshape((1,) * axis + tuple(blob.shape) + (1,) * trailing)


# --------------------------------------------------------------------------- convolution


def _in_cpu_map_layout(x):
    """x in the layout the CPU's 2-D convolutions and MAX pooling run fastest on:
    channels_last (N, H, W, C in memory). oneDNN convolves it directly and returns its result
    in it, and torch's CPU MAX pooling is about 10x slower on the default layout, so maps stay
    channels_last from the first convolution on and no layer changes their layout. Only the
    memory order differs: shapes and values are the same, and every other layer takes either
    layout."""
    if x.dim() != 4 or x.device.type != "cpu" or torch.compiler.is_compiling():
        return x
    return x.contiguous(memory_format=torch.channels_last)


class _ConvolutionBase(CaffeLayer):
    """Shared set-up of Convolution and Deconvolution; `_functions` maps the number of
    spatial axes to the torch op."""

    _functions = {}

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        cp = layer.param.convolution_param
        attrs = layer.attrs
        self.axis, self.kernel, self.stride = attrs.axis, attrs.kernel, attrs.stride
        self.pad, self.dilation, self.group = attrs.pad, attrs.dilation, attrs.group
        self.bias_term = attrs.bias_term
        if len(self.kernel) not in self._functions:
            raise LayerError(layer, f"{len(self.kernel)} spatial axes are not supported "
                                    f"(1, 2 or 3)")
        self.add_blob(layer.param_shapes[0], cp.weight_filler)
        if self.bias_term:
            self.add_blob(layer.param_shapes[1], cp.bias_filler)
        self._op = self._functions[len(self.kernel)]

    def forward(self, x):
        # Axes before `axis` are all batch-like: fold them into one so torch sees (N, C, ...).
        outer = x.shape[:self.axis]
        x = _in_cpu_map_layout(x.reshape((-1,) + tuple(x.shape[self.axis:])))
        bias = self.blobs[1] if self.bias_term else None
        y = gemm.in_product_precision(self._convolve, x, self.blobs[0], bias)
        return (y.reshape(tuple(outer) + tuple(y.shape[1:])),)


@register("Convolution")
class Convolution(_ConvolutionBase):
    """Weight (num_output, channels / group, k...), bias (num_output)."""

    _functions = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}

    def _convolve(self, x, weight, bias):
        return self._op(x, weight, bias, stride=self.stride, padding=self.pad,
                        dilation=self.dilation, groups=self.group)


@register("Deconvolution")
class Deconvolution(_ConvolutionBase):
    """Weight (channels, num_output / group, k...) as Caffe stores it, which is also torch's
    conv_transpose layout; output size stride * (in - 1) + dilation * (k - 1) + 1 - 2 pad."""

    _functions = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}

    def _convolve(self, x, weight, bias):
        return self._op(x, weight, bias, stride=self.stride, padding=self.pad,
                        groups=self.group, dilation=self.dilation)


# --------------------------------------------------------------------------- pooling

_PoolMethod = caffe_pb2.PoolingParameter.PoolMethod
# Looked up once: torch.compile cannot trace protobuf's enum lookups inside forward.
_MAX, _AVE = _PoolMethod.Value("MAX"), _PoolMethod.Value("AVE")


def _torch_pooled_size(size, kernel, pad, stride, ceil_mode):
    """torch's pooling output size on one axis (pooling_shape in its Pool.h): like Caffe's,
    except that ceil mode drops a last window starting past size + pad even without padding."""
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _torch_ceil_mode_for(attrs):
    """The ceil_mode with which torch's F.max_pool2d lays its windows as Caffe does (start
    i * stride - pad, as many as the compiler's output size), or None if neither does."""
    if any(2 * p > k for p, k in zip(attrs.pad, attrs.kernel)):
        return None         # torch refuses pad > kernel / 2; Caffe allows pad < kernel
    for ceil_mode in (True, False):
        if all(_torch_pooled_size(n, k, p, s, ceil_mode) == o for n, k, p, s, o in
               zip(attrs.input_size, attrs.kernel, attrs.pad, attrs.stride, attrs.output_size)):
            return ceil_mode
    return None


@register("Pooling")
class Pooling(CaffeLayer):
    """MAX / AVE / STOCHASTIC pooling over (N, C, H, W) with Caffe's window rules.

    The output size is the compiler's (Caffe's ceil rule with the drop rule, or FLOOR);
    windows are laid out by explicit padding so that the last, possibly overhanging, window
    is kept where Caffe keeps it (torch's ceil_mode drops it for p = 0, k < s).
    """

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        attrs = layer.attrs
        if attrs is None:
            raise LayerError(layer, "the output shape is unknown; give the net's input "
                                    "shapes to the compiler")
        self.method, self.kernel = attrs.method, attrs.kernel
        self.pad, self.stride = attrs.pad, attrs.stride
        self.out_size, self.in_size = attrs.output_size, attrs.input_size
        self.with_mask = attrs.with_mask
        self.torch_ceil_mode = _torch_ceil_mode_for(attrs)
        divisor_h, divisor_w = (torch.tensor(d, dtype=torch.float64) for d in attrs.ave_divisors)
        # Caffe's AVE divisor per output position (the compiler's, see PoolingAttrs).
        self.register_buffer("ave_divisor", divisor_h[:, None] * divisor_w[None, :],
                             persistent=False)

    def forward(self, x):
        if x.dim() != 4:
            raise LayerError(self.layer, f"input must have 4 axes, got {tuple(x.shape)}")
        if tuple(x.shape[2:]) != self.in_size:
            # The output size was fixed by the compiler for this input size.
            raise LayerError(self.layer, f"input spatial size {tuple(x.shape[2:])} differs "
                                         f"from the compiled {self.in_size}")
        if self.method == _MAX:
            y, mask = self._max(x)
            y = self._extend(y, _NEG_FLT_MAX)
            return (y,) if mask is None else (y, self._extend(mask, -1))
        if self.method == _AVE:
            return (self._extend(self._ave(x), 0.0),)
        if self.training:   # Caffe: phase TRAIN; here train mode (see CaffeLayer)
            return (self._extend(self._stochastic_train(x), 0.0),)
        return (self._extend(self._stochastic_test(x), 0.0),)

    def _live(self, x, pad):
        """Output windows per axis that start before the input's end (start = i * stride -
        pad). Later ones, which a large stride makes, hold no input: Caffe's result there is a
        constant (-FLT_MAX for MAX, 0 otherwise), filled in by _extend, so the padded input
        never grows with the stride."""
        return tuple(min(o, -(-(n + p) // s)) for o, n, p, s in
                     zip(self.out_size, x.shape[2:], pad, self.stride))

    def _padded(self, x, pad, value):
        """The input padded so that every live window fits: the ceil rule's last window may
        reach past size + pad (by less than a kernel)."""
        kernel = self.kernel
        after = tuple(max(0, (o - 1) * s + k - n - p) for o, s, k, n, p in
                      zip(self._live(x, pad), self.stride, kernel, x.shape[2:], pad))
        return F.pad(x, (pad[1], after[1], pad[0], after[0]), value=value)

    def _stride_in(self, padded):
        # A stride longer than the padded input leaves one live window on that axis, wherever
        # the next would start; capping it keeps the value within what torch's kernels take.
        return tuple(min(s, size) for s, size in zip(self.stride, padded.shape[2:]))

    @staticmethod
    def _crop(y, live):
        # The padded input can hold more windows than Caffe's output has (FLOOR mode, or
        # overhang on one axis); Caffe's are the first ones.
        return y[:, :, :live[0], :live[1]]

    def _extend(self, y, value):
        missing_h, missing_w = (o - n for o, n in zip(self.out_size, y.shape[2:]))
        if not (missing_h or missing_w):
            return y
        return F.pad(y, (0, missing_w, 0, missing_h), value=value)

    def _max(self, x):
        if self.torch_ceil_mode is not None:
            # torch's windows are Caffe's: its indices (h * W + w of the input) are Caffe's
            # mask, and its CPU backward adds each output's gradient to its argmax in output
            # order, as Caffe's loop does.
            y, index = F.max_pool2d(_in_cpu_map_layout(x), self.kernel, self.stride, self.pad,
                                    ceil_mode=self.torch_ceil_mode, return_indices=True)
            return y, (index.to(x.dtype) if self.with_mask else None)
        # Padding with -FLT_MAX never wins against an input value and reproduces Caffe's
        # -FLT_MAX for a window that holds no input element.
        live = self._live(x, self.pad)
        padded = self._padded(x, self.pad, _NEG_FLT_MAX)
        y, index = F.max_pool2d(_in_cpu_map_layout(padded), self.kernel,
                                self._stride_in(padded), return_indices=True)
        y = self._crop(y, live)
        if not self.with_mask:
            return y, None
        return y, self._mask(self._crop(index, live), padded.shape[3], x.shape[2:]).to(x.dtype)

    def _mask(self, index, padded_width, size):
        # Caffe's second MAX top: the argmax as h * W + w of the unpadded input, -1 if none.
        h = torch.div(index, padded_width, rounding_mode="floor") - self.pad[0]
        w = index % padded_width - self.pad[1]
        inside = (h >= 0) & (h < size[0]) & (w >= 0) & (w < size[1])
        return torch.where(inside, h * size[1] + w, torch.full_like(index, -1))

    def _ave(self, x):
        live = self._live(x, self.pad)
        padded = self._padded(x, self.pad, 0.0)
        sums = self._crop(F.avg_pool2d(padded, self.kernel, self._stride_in(padded),
                                       divisor_override=1), live)
        divisor = self.ave_divisor[:live[0], :live[1]].to(device=x.device, dtype=x.dtype)
        return sums / divisor

    def _windows(self, x):
        """(N, C, kh * kw, live_h, live_w): each live output's window, row-major, zero beyond
        the input. Caffe's STOCHASTIC kernels ignore `pad`: windows start at i * stride."""
        kernel = self.kernel
        live = self._live(x, (0, 0))
        padded = self._padded(x, (0, 0), 0.0)
        stride = self._stride_in(padded)
        cols = F.unfold(padded, kernel, stride=stride)
        rows = (padded.shape[2] - kernel[0]) // stride[0] + 1
        cols = cols.reshape(x.shape[0], x.shape[1], kernel[0] * kernel[1], rows, -1)
        return cols[..., :live[0], :live[1]]

    def _stochastic_train(self, x):
        # StoPoolForwardTrain: pick the first element whose running sum reaches u * window
        # sum (u ~ U[0, 1)); the gradient flows to the picked element only.
        cols = self._windows(x)
        running = cols.cumsum(dim=2)
        # One draw per output, as Caffe draws them, also for the windows past the input.
        shape = (cols.shape[0], cols.shape[1], 1) + self.out_size
        u = torch.rand(shape, generator=self.rng, dtype=torch.float32)
        u = u[..., :cols.shape[3], :cols.shape[4]]
        threshold = u.to(device=x.device, dtype=x.dtype) * running[:, :, -1:]
        reached = (running >= threshold).to(x.dtype)
        picked = reached.argmax(dim=2, keepdim=True)  # the first True
        return cols.gather(2, picked).squeeze(2)

    def _stochastic_test(self, x):
        # StoPoolForwardTest: the activation-weighted mean sum(x^2) / sum(x), 0 where the
        # window sums to <= 0.
        cols = self._windows(x)
        total = cols.sum(dim=2)
        positive = total > 0
        safe = torch.where(positive, total, torch.ones_like(total))
        return torch.where(positive, (cols * cols).sum(dim=2) / safe, torch.zeros_like(total))


# --------------------------------------------------------------------------- LRN

_NormRegion = caffe_pb2.LRNParameter.NormRegion


def _channel_window_sums(t, size):
    """Sum of t over the `size` channels centred on each channel (size odd; zero beyond the
    channel range)."""
    half = (size - 1) // 2
    padded = F.pad(t, (0, 0, 0, 0, half, half))
    channels = t.shape[1]
    total = padded[:, 0:channels].clone()
    for j in range(1, size):
        total += padded[:, j:j + channels]
    return total


class _LRNAcrossChannels(torch.autograd.Function):
    """y = x * scale^-beta, scale = k + alpha / n * (sum of x^2 over the n channels centred on
    each), with lrn_layer.cpp's backward (CrossChannelBackward):
        dx = dy * scale^-beta - (2 alpha beta / n) * x * (window sum of dy * y / scale).
    Autograd of the forward would differentiate every channel slice of the window separately
    (each a zero-filled gradient the size of x) and the power; Caffe's formula needs one window
    sum. CaffeNet's two LRN layers, forward and backward, measured alone: 13.1 -> 7.7 ms."""

    @staticmethod
    def forward(ctx, x, size, alpha, beta, k):
        scale = _channel_window_sums(x * x, size).mul_(alpha / size).add_(k)
        scale_power = scale.pow(-beta)
        y = x * scale_power
        ctx.save_for_backward(x, y, scale, scale_power)
        ctx.size, ctx.alpha, ctx.beta = size, alpha, beta
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, y, scale, scale_power = ctx.saved_tensors
        window = _channel_window_sums(dy * y / scale, ctx.size)
        dx = dy * scale_power
        dx.addcmul_(x, window, value=-2 * ctx.alpha * ctx.beta / ctx.size)
        return dx, None, None, None, None


@register("LRN")
class LRN(CaffeLayer):
    """Local response normalisation (lrn_layer.cpp) over (N, C, H, W)."""

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        lp = layer.param.lrn_param
        self.size = lp.local_size
        self.pre_pad = (lp.local_size - 1) // 2
        self.alpha, self.beta, self.k = lp.alpha, lp.beta, lp.k
        self.across = lp.norm_region == _NormRegion.Value("ACROSS_CHANNELS")

    def forward(self, x):
        if x.dim() != 4:
            raise LayerError(self.layer, f"input must have 4 axes, got {tuple(x.shape)}")
        if self.across:
            return (_LRNAcrossChannels.apply(x, self.size, self.alpha, self.beta, self.k),)
        # Caffe builds this from a Pooling AVE layer (kernel n, pad (n - 1) / 2, stride 1) and a
        # Power layer (shift 1, scale alpha): for odd n every window's divisor is n^2 under the
        # pooling rule, and k is not used.
        mean = F.avg_pool2d(x * x, self.size, stride=1, padding=self.pre_pad,
                            count_include_pad=True)
        return (x * (1 + self.alpha * mean).pow(-self.beta),)


# --------------------------------------------------------------------------- InnerProduct


@register("InnerProduct")
class InnerProduct(CaffeLayer):
    """y = x W^T + b over x flattened from `axis`; W is (N, K), or (K, N) with transpose."""

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        ip = layer.param.inner_product_param
        self.axis, self.transpose = layer.attrs.axis, layer.attrs.transpose
        self.bias_term = layer.attrs.bias_term
        self.add_blob(layer.param_shapes[0], ip.weight_filler)
        if self.bias_term:
            self.add_blob(layer.param_shapes[1], ip.bias_filler)

    def forward(self, x):
        outer = tuple(x.shape[:self.axis])
        flat = x.reshape(math.prod(outer), -1)
        bias = self.blobs[1] if self.bias_term else None
        y = gemm.linear(flat, self.blobs[0], bias, transpose=self.transpose)
        return (y.reshape(outer + (y.shape[1],)),)


# --------------------------------------------------------------------------- Embed


@register("Embed")
class Embed(CaffeLayer):
    """One-hot product: row int(x) of the (input_dim, num_output) weight, plus bias.

    Index -1 is LRCN's padding (input -1 where cont = 0). Caffe's Embed would read outside
    the weight there; LRCN's nets need only a finite embedding for it (the loss ignores the
    target and cont cuts the recurrence), so -1 reads a row of zeros that receives no
    gradient; the bias, if any, is still added as for every index.
    """

    no_grad_bottoms = (0,)
    PADDING_INDEX = -1

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        ep = layer.param.embed_param
        self.input_dim = ep.input_dim
        self.bias_term = ep.bias_term
        self.add_blob(layer.param_shapes[0], ep.weight_filler)
        if self.bias_term:
            self.add_blob(layer.param_shapes[1], ep.bias_filler)

    def forward(self, x):
        # static_cast<int>: float indices truncate toward zero.
        index = x.detach().to(torch.int64)
        bad = (index < self.PADDING_INDEX) | (index >= self.input_dim)
        # The check reads values (a device sync, a graph break): compiled code goes without.
        if not torch.compiler.is_compiling() and bool(bad.any()):
            value = x[bad].flatten()[0].item()
            raise LayerError(self.layer, f"index {value} is outside [0, {self.input_dim}) "
                                         f"(input_dim) and is not the padding index "
                                         f"{self.PADDING_INDEX}")
        keep = index != self.PADDING_INDEX
        rows = F.embedding(torch.where(keep, index, torch.zeros_like(index)), self.blobs[0])
        y = rows * keep.unsqueeze(-1).to(rows.dtype)
        if self.bias_term:
            y = y + self.blobs[1]
        return (y,)


# --------------------------------------------------------------------------- BatchNorm


@register("BatchNorm")
class BatchNorm(CaffeLayer):
    """batch_norm_layer.cpp: normalise per channel (axis 1), no affine part.

    Blobs mean_sum, var_sum (C,) and scale_factor (1,) are running sums, not learnt (Caffe
    forces lr_mult 0 on them): they keep requires_grad False and are updated in forward.
    """

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        bp = layer.param.batch_norm_param
        # None (unset) follows the module's mode: training starts as phase == TRAIN and follows
        # .train() / .eval(), so eval mode is Caffe's TEST.
        self.global_stats_setting = layer.attrs.use_global_stats
        self.maf = bp.moving_average_fraction
        self.eps = bp.eps
        for shape in layer.param_shapes:
            self.add_blob(shape).requires_grad_(False)

    @property
    def use_global_stats(self):
        if self.global_stats_setting is None:
            return not self.training
        return self.global_stats_setting

    def forward(self, x):
        original_shape = x.shape
        if x.dim() == 1:
            x = x.reshape(-1, 1)  # Caffe: a 1-axis bottom has one channel.
        reduce_dims = [d for d in range(x.dim()) if d != 1]
        if self.use_global_stats:
            mean, var = self._global_stats()
        else:
            mean = x.mean(dim=reduce_dims)
            var = (x - _broadcast(mean, x.dim(), 1)).pow(2).mean(dim=reduce_dims)
            self._update_running(mean, var, x.numel() // x.shape[1])
        std = (var + self.eps).sqrt()
        y = (x - _broadcast(mean, x.dim(), 1)) / _broadcast(std, x.dim(), 1)
        return (y.reshape(original_shape),)

    def _global_stats(self):
        factor = self.blobs[2][0]
        # scale_factor 0 (never trained) reads as mean 0, variance 0.
        inverse = torch.where(factor == 0, torch.zeros_like(factor), 1 / factor)
        return self.blobs[0] * inverse, self.blobs[1] * inverse

    @torch.no_grad()
    def _update_running(self, mean, var, m):
        # Unbiased variance goes into the running sum; the batch itself uses the biased one.
        correction = m / (m - 1) if m > 1 else 1.0
        self.blobs[2].mul_(self.maf).add_(1)
        self.blobs[0].mul_(self.maf).add_(mean.detach().to(self.blobs[0].dtype))
        self.blobs[1].mul_(self.maf).add_(correction * var.detach().to(self.blobs[1].dtype))


# --------------------------------------------------------------------------- Scale / Bias


@register("Scale")
class Scale(CaffeLayer):
    """y = x * scale (+ bias); scale is bottom[1] when given, else a blob (filler default
    constant 1, as scale_layer.cpp sets it); bias is a blob covering the same axes."""

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        sp = layer.param.scale_param
        self.axis = layer.attrs.axis      # 0 for a scalar operand, as Caffe broadcasts it
        self.scale_bottom = len(layer.bottoms) > 1
        self.bias_term = sp.bias_term
        if not self.scale_bottom:
            # scale_layer.cpp: without a filler the scale starts at one, not zero.
            filler = sp.filler if sp.HasField("filler") else caffe_pb2.FillerParameter(
                type="constant", value=1.0)
            self.add_blob(layer.param_shapes[0], filler)
        if self.bias_term:
            self.add_blob(layer.param_shapes[-1], sp.bias_filler)

    def forward(self, x, *scale_bottom):
        scale = scale_bottom[0] if self.scale_bottom else self.blobs[0]
        y = x * _broadcast(scale, x.dim(), self.axis)
        if self.bias_term:
            y = y + _broadcast(self.blobs[-1], x.dim(), self.axis)
        return (y,)


@register("Bias")
class Bias(CaffeLayer):
    """y = x + bias; bias is bottom[1] when given, else a blob (filler default zeros)."""

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        bp = layer.param.bias_param
        self.axis = layer.attrs.axis      # 0 for a scalar operand, as Caffe broadcasts it
        self.bias_bottom = len(layer.bottoms) > 1
        if not self.bias_bottom:
            self.add_blob(layer.param_shapes[0], bp.filler)

    def forward(self, x, *bias_bottom):
        bias = bias_bottom[0] if self.bias_bottom else self.blobs[0]
        return (x + _broadcast(bias, x.dim(), self.axis),)


# --------------------------------------------------------------------------- MVN


class _NormalizeVariance(torch.autograd.Function):
    """(x - mean) / (std + eps) per row, with mvn_layer.cpp's backward
    dx = (dy - mean(dy) - y * mean(y * dy)) / (std + eps). That is the exact gradient up to
    a factor std / (std + eps) on one term, and stays finite for a constant row, where the
    exact gradient (through sqrt at 0) would be NaN."""

    @staticmethod
    def forward(ctx, rows, eps):
        centred = rows - rows.mean(dim=1, keepdim=True)
        std_eps = centred.pow(2).mean(dim=1, keepdim=True).sqrt() + eps
        y = centred / std_eps
        ctx.save_for_backward(y, std_eps)
        return y

    @staticmethod
    def backward(ctx, dy):
        y, std_eps = ctx.saved_tensors
        dx = dy - dy.mean(dim=1, keepdim=True) - y * (y * dy).mean(dim=1, keepdim=True)
        return dx / std_eps, None


@register("MVN")
class MVN(CaffeLayer):
    """Mean (and variance) normalisation per (n, c), or per n with across_channels; eps is
    added to the standard deviation, not to the variance."""

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        mp = layer.param.mvn_param
        self.normalize_variance = mp.normalize_variance
        self.across_channels = mp.across_channels
        self.eps = mp.eps

    def forward(self, x):
        # Caffe's num() / channels() are legacy axes 0 and 1.
        num = x.shape[0] if x.dim() > 0 else 1
        if not self.across_channels and x.dim() > 1:
            num *= x.shape[1]
        rows = x.reshape(num, -1)
        if self.normalize_variance:
            y = _NormalizeVariance.apply(rows, self.eps)
        else:
            y = rows - rows.mean(dim=1, keepdim=True)
        return (y.reshape(x.shape),)


# --------------------------------------------------------------------------- Crop


@register("Crop")
class Crop(CaffeLayer):
    """Crop bottom[0] to bottom[1]'s shape on the axes from `axis` on, at `offset` (none:
    0, one: every axis, else one per cropped axis). bottom[1] only gives a shape."""

    no_grad_bottoms = (1,)

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        self.axis, self.offsets = layer.attrs.axis, layer.attrs.offsets

    def forward(self, x, reference):
        index = [slice(None)] * self.axis
        for i, offset in enumerate(self.offsets):
            axis = self.axis + i
            size = reference.shape[axis]
            if offset + size > x.shape[axis]:
                raise LayerError(self.layer, f"axis {axis}: offset {offset} + size {size} "
                                             f"exceeds {x.shape[axis]}")
            index.append(slice(offset, offset + size))
        return (x[tuple(index)],)


# --------------------------------------------------------------------------- SPP


@register("SPP")
class SPP(CaffeLayer):
    """spp_layer.cpp: one Pooling unit per pyramid level (SPPAttrs.levels gives each level's
    resolved Pooling attrs and output), each flattened to (N, C * bins) and concatenated
    on axis 1; a pyramid of height 1 is its single Pooling, unflattened. Autograd sums the
    levels' gradients into the bottom, as Caffe's Split layer does."""

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        levels = []
        for spp_level in layer.attrs.levels:
            # Each level is a Pooling unit built from the level's resolved Pooling attrs.
            level = copy.copy(layer)
            level.type, level.attrs = "Pooling", spp_level.pooling
            level.top_shapes = [spp_level.top_shape]
            levels.append(Pooling(level, self.rng))
        self.levels = torch.nn.ModuleList(levels)

    def forward(self, x):
        if len(self.levels) == 1:
            return self.levels[0](x)
        return (torch.cat([level(x)[0].flatten(1) for level in self.levels], dim=1),)


# --------------------------------------------------------------------------- Im2col


@register("Im2col")
class Im2col(CaffeLayer):
    """im2col_layer.cpp: the columns a convolution multiplies, as a blob. Channel c and kernel
    offset k (row-major over the kernel's axes) give top channel c * prod(kernel) + k; the
    spatial axes are the convolution's output positions; zero padding. The same layout in any
    number of spatial axes (Caffe's im2col_cpu and im2col_nd_cpu agree). Backward, through
    autograd, is col2im: every column entry's gradient added to the pixel it was read from."""

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        attrs = layer.attrs
        self.axis, self.kernel, self.stride = attrs.axis, attrs.kernel, attrs.stride
        self.pad, self.dilation, self.out_size = attrs.pad, attrs.dilation, attrs.output_size

    def forward(self, x):
        outer, channels = tuple(x.shape[:self.axis]), x.shape[self.axis]
        x = x.reshape((-1, channels) + tuple(x.shape[self.axis + 1:]))
        # F.pad lists the last axis first.
        padded = F.pad(x, [p for p in reversed(self.pad) for _ in range(2)])
        columns = []
        for offset in itertools.product(*(range(k) for k in self.kernel)):
            window = tuple(slice(o * d, o * d + s * (n - 1) + 1, s) for o, d, s, n in
                           zip(offset, self.dilation, self.stride, self.out_size))
            columns.append(padded[(slice(None), slice(None)) + window])
        cols = torch.stack(columns, dim=2)          # (M, C, prod(kernel), *out_size)
        return (cols.reshape(outer + (channels * len(columns),) + self.out_size),)
