"""Element-wise ("neuron") layers: one bottom, one top of the same shape.

Each follows Caffe's forward formula and Caffe's gradient, including the value the gradient
takes at a kink (ReLU at 0 passes `negative_slope`, ELU at 0 passes `alpha`, BNLL at 0 passes
sigmoid(0)); torch.where with clamped branch inputs keeps the unused branch's gradient finite.
"""

import math

import torch
import torch.nn.functional as F

from lrcn_proto import caffe_pb2
from runtime.layers.base import CaffeLayer, LayerError
from runtime.layers.registry import register


@register("ReLU")
class ReLU(CaffeLayer):
    """y = max(x, 0) + negative_slope * min(x, 0); the gradient at x == 0 is negative_slope."""

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        self.negative_slope = float(self.param.relu_param.negative_slope)

    def forward(self, x):
        if self.negative_slope == 0:
            # torch.relu's gradient at 0 is 0, as Caffe's (x > 0) mask gives.
            return (torch.relu(x),)
        # leaky_relu passes grad * slope wherever x <= 0, as Caffe does.
        return (F.leaky_relu(x, self.negative_slope),)


@register("PReLU")
class PReLU(CaffeLayer):
    """y = x for x > 0, else a_c * x, with one learned slope per channel (axis 1) or one shared.

    The slope blob's shape comes from the compiler ((C,), or () when channel_shared); without a
    filler Caffe starts the slopes at 0.25.
    """

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        prelu = self.param.prelu_param
        self.channel_shared = prelu.channel_shared
        if prelu.HasField("filler"):
            filler = prelu.filler
        else:
            filler = caffe_pb2.FillerParameter(type="constant", value=0.25)
        if not layer.param_shapes:
            raise LayerError(layer, "the slope shape is unknown (the bottom's shape was not "
                                    "known when the net was compiled)")
        self.add_blob(layer.param_shapes[0], filler)

    def forward(self, x):
        slope = self.blobs[0]
        if not self.channel_shared:
            # (C,) -> (C, 1, 1, ...) so it broadcasts over axis 1 of (N, C, ...).
            slope = slope.reshape((-1,) + (1,) * (x.dim() - 2))
        # where() gives Caffe's gradients: d/dx = 1 or a (a at x == 0), d/da = x where x <= 0.
        return (torch.where(x > 0, x, slope * x),)


@register("ELU")
class ELU(CaffeLayer):
    """y = x for x > 0, else alpha * (exp(x) - 1); the gradient at x == 0 is alpha."""

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        self.alpha = float(self.param.elu_param.alpha)

    def forward(self, x):
        # Clamping the exp branch's input keeps exp finite for large x, so the unused branch
        # contributes 0 (not 0 * inf) to the gradient.
        negative = self.alpha * (torch.exp(torch.clamp(x, max=0)) - 1)
        return (torch.where(x > 0, x, negative),)


@register("Sigmoid")
class Sigmoid(CaffeLayer):
    def forward(self, x):
        return (torch.sigmoid(x),)


@register("TanH")
class TanH(CaffeLayer):
    def forward(self, x):
        return (torch.tanh(x),)


@register("AbsVal")
class AbsVal(CaffeLayer):
    """y = |x|; the gradient is sign(x), 0 at x == 0 as in Caffe."""

    def forward(self, x):
        return (torch.abs(x),)


@register("Power")
class Power(CaffeLayer):
    """y = (shift + scale * x) ^ power."""

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        p = self.param.power_param
        self.power, self.scale, self.shift = float(p.power), float(p.scale), float(p.shift)

    def forward(self, x):
        if self.scale == 0:
            # Caffe fills a constant and passes no gradient: 1 for power 0, else shift^power.
            value = 1.0 if self.power == 0 else self.shift ** self.power
            return (torch.full_like(x, value),)
        base = self.shift + self.scale * x
        if self.power == 1:
            return (base,)
        return (torch.pow(base, self.power),)


@register("Exp")
class Exp(CaffeLayer):
    """y = base ^ (shift + scale * x), base -1 meaning e; computed as Caffe does:
    outer * exp(inner * x) with inner = scale * ln(base) and outer = base ^ shift."""

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        p = self.param.exp_param
        base, scale, shift = float(p.base), float(p.scale), float(p.shift)
        log_base = 1.0 if base == -1 else math.log(base)
        self.inner_scale = log_base * scale
        if shift == 0:
            self.outer_scale = 1.0
        else:
            self.outer_scale = math.exp(shift) if base == -1 else base ** shift

    def forward(self, x):
        y = torch.exp(self.inner_scale * x) if self.inner_scale != 1 else torch.exp(x)
        if self.outer_scale != 1:
            y = self.outer_scale * y
        return (y,)


@register("Log")
class Log(CaffeLayer):
    """y = log_base(shift + scale * x), base -1 meaning e."""

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        p = self.param.log_param
        base = float(p.base)
        self.base_scale = 1.0 if base == -1 else 1.0 / math.log(base)
        self.scale, self.shift = float(p.scale), float(p.shift)

    def forward(self, x):
        if self.scale != 1 or self.shift != 0:
            x = self.scale * x + self.shift
        y = torch.log(x)
        if self.base_scale != 1:
            y = self.base_scale * y
        return (y,)


@register("BNLL")
class BNLL(CaffeLayer):
    """y = log(1 + exp(x)), Caffe's stable form: x + log(1 + exp(-x)) for x > 0.

    The gradient is sigmoid(x) everywhere (0.5 at x == 0), as Caffe's exp/(exp + 1).
    """

    def forward(self, x):
        positive = torch.clamp(x, min=0)
        negative = torch.clamp(x, max=0)
        # Each branch sees only inputs on its own side, so neither overflows.
        above = positive + torch.log(1 + torch.exp(-positive))
        below = torch.log(1 + torch.exp(negative))
        return (torch.where(x > 0, above, below),)


@register("Threshold")
class Threshold(CaffeLayer):
    """y = 1 where x > threshold, else 0. Caffe has no backward for it: no gradient flows."""

    no_grad_bottoms = (0,)

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        self.threshold = float(self.param.threshold_param.threshold)

    def forward(self, x):
        return ((x.detach() > self.threshold).to(x.dtype),)


@register("Dropout")
class Dropout(CaffeLayer):
    """Inverted dropout: in TRAIN, y = x * mask / (1 - ratio) with mask ~ Bernoulli(1 - ratio);
    in TEST, y = x. Here TRAIN means train mode (module.training, see CaffeLayer).

    Masks come from a generator on the input's device, seeded once at construction from the
    layer's rng, so a run is reproducible for a given solver seed whatever the device.
    """

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        self.ratio = float(self.param.dropout_param.dropout_ratio)   # the compiler checked it
        self.scale = 1.0 / (1.0 - self.ratio)
        # Drawn now (construction order is fixed), not at the first forward, so that the seed
        # does not depend on when other users of a shared rng draw from it.
        self.seed = int(torch.randint(0, 2 ** 62, (1,), generator=self.rng))
        self._generators = {}

    def _generator(self, device):
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[key]

    def resume_state(self):
        """The mask generators' positions, so a resumed run draws the same masks."""
        return {device: generator.get_state() for device, generator in self._generators.items()}

    def restore_state(self, state):
        for device, generator_state in state.items():
            self._generator(torch.device(device)).set_state(generator_state)

    def forward(self, x):
        if not self.training or self.ratio == 0:
            return (x,)
        uniform = torch.rand(x.shape, generator=self._generator(x.device), device=x.device,
                             dtype=x.dtype)
        keep = (uniform >= self.ratio).to(x.dtype)
        return (x * (keep * self.scale),)


@register("Swish")
class Swish(CaffeLayer):
    """y = x * sigmoid(beta * x)."""

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        self.beta = float(self.param.swish_param.beta)

    def forward(self, x):
        return (x * torch.sigmoid(self.beta * x),)


@register("Clip")
class Clip(CaffeLayer):
    """y = min(max(x, min), max); the gradient passes where min <= x <= max (bounds included),
    as in Caffe and torch.clamp."""

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        p = self.param.clip_param
        self.min, self.max = float(p.min), float(p.max)

    def forward(self, x):
        return (torch.clamp(x, self.min, self.max),)
