"""Layers that route, reshape, combine or reduce blobs without learned weights (plus Parameter).

Axes are the compiler's canonical ones (`layer.attrs.axis`, Caffe's Blob::CanonicalAxisIndex).
"""

import torch
import torch.nn.functional as F

from lrcn_proto import caffe_pb2
from runtime.layers.base import CaffeLayer, LayerError
from runtime.layers.registry import register


@register("Input")
class Input(CaffeLayer):
    """The net's fed blobs. Convention: the Net passes the tensors it was given for this
    layer's tops, in top order, as the bottoms of forward, which returns them unchanged."""

    def forward(self, *fed):
        if len(fed) != len(self.layer.tops):
            raise LayerError(self.layer, f"Input has {len(self.layer.tops)} "
                                         f"tops but was fed {len(fed)} tensors")
        return tuple(fed)


@register("Parameter")
class Parameter(CaffeLayer):
    """One learned blob as the single top (zeros until trained or loaded, as in Caffe)."""

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        if not layer.param_shapes:
            raise LayerError(layer, "Parameter needs parameter_param.shape")
        self.add_blob(layer.param_shapes[0])

    def forward(self):
        return (self.blobs[0],)


@register("Reshape")
class Reshape(CaffeLayer):
    """Reshape to the compiler's top shape (reshape_param: 0 copies, one -1 inferred, the
    [axis, axis + num_axes) range replaced). The rule lives in the compiler only, so a bottom
    of another shape than the compiled one is an error rather than a silent guess."""

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        self.bottom_shape = layer.bottom_shapes[0]
        self.top_shape = layer.top_shapes[0]

    def forward(self, x):
        if self.top_shape is None or tuple(x.shape) != tuple(self.bottom_shape):
            raise LayerError(
                self.layer, f"Reshape was compiled for bottom shape "
                f"{self.bottom_shape} (top {self.top_shape}) but got {tuple(x.shape)}; "
                f"compile the net with the shapes it is run with")
        return (x.reshape(self.top_shape),)


@register("Flatten")
class Flatten(CaffeLayer):
    """Merge axes axis..end_axis (inclusive) into one."""

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        self.start, self.end = layer.attrs.start, layer.attrs.end

    def forward(self, x):
        return (torch.flatten(x, self.start, self.end),)


@register("Slice")
class Slice(CaffeLayer):
    """Cut along the axis into the compiled sizes (from slice_point, or equal parts)."""

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        self.axis, self.sizes = layer.attrs.axis, list(layer.attrs.sizes)

    def forward(self, x):
        return tuple(torch.split(x, self.sizes, dim=self.axis))


@register("Concat")
class Concat(CaffeLayer):
    """Join bottoms along the compiled axis (the legacy concat_dim wins, as in Caffe)."""

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        self.axis = layer.attrs.axis

    def forward(self, *bottoms):
        if len(bottoms) == 1:
            return (bottoms[0],)
        return (torch.cat(bottoms, dim=self.axis),)


@register("Split")
class Split(CaffeLayer):
    """One bottom copied to every top; autograd sums the tops' gradients, as Caffe does."""

    def forward(self, x):
        return (x,) * len(self.layer.tops)


@register("Silence")
class Silence(CaffeLayer):
    """Consumes its bottoms and produces nothing; they receive no (zero) gradient from it."""

    def forward(self, *bottoms):
        return ()


@register("Eltwise")
class Eltwise(CaffeLayer):
    """Element-wise PROD, SUM (with per-bottom coeff) or MAX over same-shaped bottoms.

    MAX routes the gradient to the bottom Caffe's CPU forward chose: bottom 1 beats bottom 0
    unless 0 is strictly greater, and each later bottom wins only when strictly greater (so
    on a tie among bottoms 0 and 1, bottom 1 gets it; later ties keep the earlier winner).

    Fork (lisa-caffe-public) coeff_blob, SUM only: the last bottom C of shape (K, d0, .., dm)
    scales the other K bottoms; C[i] reshaped to `num` = C.count / K entries multiplies
    bottom i viewed as (num, count / num), times coeff[i] when given. C gets no gradient.
    """

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        p = self.param.eltwise_param
        self.op = p.operation
        self.coeff_blob = p.coeff_blob
        num_bottoms = len(layer.bottoms)
        num_inputs = num_bottoms - 1 if self.coeff_blob else num_bottoms
        self.coeffs = list(p.coeff) if p.coeff else [1.0] * num_inputs
        if self.coeff_blob:
            # The coefficient blob is data, never trained through this layer.
            self.no_grad_bottoms = (num_bottoms - 1,)

    def forward(self, *bottoms):
        ops = caffe_pb2.EltwiseParameter
        if self.op == ops.PROD:
            top = bottoms[0]
            for b in bottoms[1:]:
                top = top * b
            return (top,)
        if self.op == ops.MAX:
            top = bottoms[0]
            if len(bottoms) > 1:
                top = torch.where(bottoms[0] > bottoms[1], bottoms[0], bottoms[1])
            for b in bottoms[2:]:
                top = torch.where(b > top, b, top)
            return (top,)
        if self.coeff_blob:
            return (self._sum_with_coeff_blob(bottoms[:-1], bottoms[-1].detach()),)
        top = None
        for coeff, b in zip(self.coeffs, bottoms):
            term = b if coeff == 1 else coeff * b
            top = term if top is None else top + term
        return (top,)

    def _sum_with_coeff_blob(self, inputs, coeff_blob):
        k = len(inputs)
        shape = inputs[0].shape
        leading = tuple(coeff_blob.shape[1:])
        if coeff_blob.shape[0] != k or tuple(shape[:len(leading)]) != leading:
            raise LayerError(self.layer, f"coeff blob shape {tuple(coeff_blob.shape)} must be "
                                         f"({k}, *leading axes of {tuple(shape)})")
        per_input = coeff_blob.reshape(k, -1, 1)
        num = per_input.shape[1]
        top = None
        for i, (coeff, b) in enumerate(zip(self.coeffs, inputs)):
            term = b.reshape(num, -1) * (coeff * per_input[i])
            top = term if top is None else top + term
        return top.reshape(shape)


@register("Tile")
class Tile(CaffeLayer):
    """Repeat the block from `axis` on `tiles` times along `axis` (a whole-block repeat)."""

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        self.axis, self.tiles = layer.attrs.axis, self.param.tile_param.tiles

    def forward(self, x):
        repeats = [1] * x.dim()
        repeats[self.axis] = self.tiles
        return (x.repeat(*repeats),)


def caffe_top_k(x, dim, k):
    """(values, indices) of the k largest entries along `dim`, ordered as Caffe's
    std::partial_sort over (value, index) pairs with std::greater: by value descending,
    equal values by index descending."""
    size = x.shape[dim]
    # A stable descending sort keeps equal values in input order; reversing first makes that
    # order "larger index first".
    values, order = torch.sort(x.flip(dim), dim=dim, descending=True, stable=True)
    indices = (size - 1) - order
    return values.narrow(dim, 0, k), indices.narrow(dim, 0, k)


@register("ArgMax")
class ArgMax(CaffeLayer):
    """Indices (as floats) of the top_k values along `axis`; without `axis`, over each item's
    flattened data, giving (N, 1, top_k) or, with out_max_val, (N, 2, top_k) holding indices
    then values (padded with 1s to the bottom's axis count). With `axis` and out_max_val the
    top holds the values only. No gradient (Caffe has no backward)."""

    no_grad_bottoms = (0,)

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        p = self.param.argmax_param
        self.out_max_val, self.top_k = p.out_max_val, p.top_k
        self.axis = layer.attrs.axis      # None: over each item's flattened data

    def forward(self, x):
        x = x.detach()
        if self.axis is not None:
            self._check_k(x.shape[self.axis])
            values, indices = caffe_top_k(x, self.axis, self.top_k)
            return (values if self.out_max_val else indices.to(x.dtype),)
        flat = x.reshape(x.shape[0], -1)
        self._check_k(flat.shape[1])
        values, indices = caffe_top_k(flat, 1, self.top_k)
        if self.out_max_val:
            top = torch.stack([indices.to(x.dtype), values], dim=1)
        else:
            top = indices.to(x.dtype).unsqueeze(1)
        return (top.reshape(tuple(top.shape) + (1,) * (max(x.dim(), 3) - 3)),)

    def _check_k(self, size):
        if self.top_k > size:
            raise LayerError(self.layer, f"top_k {self.top_k} exceeds the "
                                         f"{size} entries it searches")


@register("Reduction")
class Reduction(CaffeLayer):
    """SUM, ASUM (sum of |x|), SUMSQ or MEAN over all axes from `axis` on, times coeff; the
    top keeps the axes before `axis` (a 0-dim tensor for axis 0)."""

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        p = self.param.reduction_param
        self.op, self.axis, self.coeff = p.operation, layer.attrs.axis, float(p.coeff)

    def forward(self, x):
        ops = caffe_pb2.ReductionParameter
        flat = x.reshape(tuple(x.shape[:self.axis]) + (-1,))
        if self.op == ops.SUM:
            top = flat.sum(-1)
        elif self.op == ops.ASUM:
            top = flat.abs().sum(-1)
        elif self.op == ops.SUMSQ:
            top = (flat * flat).sum(-1)
        elif self.op == ops.MEAN:
            top = flat.sum(-1) / flat.shape[-1]
        else:
            raise LayerError(self.layer, f"unknown reduction {self.op}")
        return (top * self.coeff if self.coeff != 1 else top,)


@register("Softmax")
class Softmax(CaffeLayer):
    """Softmax over `axis` (max-subtracted, as Caffe)."""

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        self.axis = layer.attrs.axis

    def forward(self, x):
        return (F.softmax(x, dim=self.axis),)



@register("Filter")
class Filter(CaffeLayer):
    """filter_layer.cpp: keep the rows (axis 0) of every bottom but the last whose row in the
    last bottom, the selector, is non-zero (NaN counts as non-zero, as in C++), in order.
    The number of kept rows depends on the selector's values, so the tops' first axis varies
    from call to call. Backward: kept rows get their top's gradient, the others zero; the
    selector gets none (Caffe aborts when asked to backpropagate to it; here it is cut)."""

    def __init__(self, layer, rng):
        super().__init__(layer, rng)
        # The selector is the bottom after the filtered ones (FilterAttrs).
        self.no_grad_bottoms = (layer.attrs.num_filtered,)

    def forward(self, *bottoms):
        selector = bottoms[-1].detach()
        kept = (selector.reshape(selector.shape[0]) != 0).nonzero().squeeze(1)
        return tuple(bottom.index_select(0, kept) for bottom in bottoms[:-1])


@register("BatchReindex")
class BatchReindex(CaffeLayer):
    """batch_reindex_layer.cpp: top row i is bottom row int(index[i]) (the index truncated
    toward zero, as static_cast<int> does); an index must lie in [0, N). Backward adds each
    top row's gradient into the bottom row it came from, so a repeated index accumulates; the
    index gets no gradient (Caffe aborts when asked for one; here it is cut)."""

    no_grad_bottoms = (1,)

    def forward(self, x, index):
        index = index.detach()
        # The check reads values (a device sync, a graph break): compiled code goes without.
        if not torch.compiler.is_compiling():
            # The rows this call has (a net run at another batch size than compiled has
            # other rows than BatchReindexAttrs.num_rows).
            rows = x.shape[0]
            bad = ~((index >= 0) & (index < rows))
            if bool(bad.any()):
                raise LayerError(self.layer, f"index {index[bad][0].item():g} is outside "
                                             f"[0, {rows}), the rows of bottom 0")
        return (x.index_select(0, index.to(torch.int64)),)
