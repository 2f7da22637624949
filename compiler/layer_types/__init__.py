"""Layer type declarations: each Caffe layer type is declared once, here in the compiler.

A declaration (`LayerType`) states everything the rest of the project needs to know about a
type: its blob counts (Caffe's ExactNum / Min / Max Bottom / Top Blobs), its traits (facts other
tools ask about, such as "its first top is a loss"), and its shape rule. The shape rule also
resolves the layer's attributes (canonical axes, kernel / stride / pad with Caffe's defaults and
legacy spellings applied, slice points, crop offsets, ...) into `LayerShapes.attrs`, which
compile_net keeps as `CompiledLayer.attrs`: runtime units, ONNX converters and review tools read
those instead of interpreting the LayerParameter again.

Declare a type with the `declare` decorator on its shape rule:

    @declare("ReLU", counts=ONE_IN_ONE_OUT, traits={NEURON, TIME_MAJOR_PASSTHROUGH})
    def relu_rule(layer, bottoms, context): ...

The compute layers are declared in this package's modules, one per family (neuron, vision,
structural, loss, recurrent), the data layers in compiler/data_shapes.py; types defined outside compiler/ declare theirs in a module registered
under the "lrcn.shape_rules" entry-point group (compiler/ never imports them by name).
"""

from dataclasses import dataclass

from ..errors import CompileError

# --- traits -----------------------------------------------------------------------------------

LOSS = "loss"                       # LossLayer: the first top weighs 1 unless loss_weight says
NEURON = "neuron"                   # elementwise on one bottom: the top has the bottom's shape
TIME_MAJOR_PASSTHROUGH = "time-major passthrough"   # keeps the bottom's leading (T, N) axes
TIME_MAJOR_FROM_AXIS_2 = "time-major from axis 2"   # keeps (T, N) when its attrs.axis is >= 2
VALUE_PRESERVING = "value-preserving"   # tops hold bottom values unchanged (only moved / copied)
SINK = "sink"                       # consumes blobs, produces nothing a deployed net returns
METRIC = "metric"                   # measures against labels (a deployed net drops it)
RECURRENT = "recurrent"             # time-major x (T, N, ...) and cont (T, N) bottoms
FROZEN_BLOBS = "frozen blobs"       # blobs are running statistics: lr_mult forced to 0
DATA = "data"                       # reads its tops from a source, has no bottoms

TRAITS = (LOSS, NEURON, TIME_MAJOR_PASSTHROUGH, TIME_MAJOR_FROM_AXIS_2, VALUE_PRESERVING, SINK, METRIC, RECURRENT,
          FROZEN_BLOBS, DATA)


# --- blob counts ------------------------------------------------------------------------------

@dataclass(frozen=True)
class BlobCounts:
    min_bottoms: int
    max_bottoms: object          # None: no upper limit
    min_tops: int
    max_tops: object
    one_top_per_bottom: bool = False   # Convolution: EqualNumBottomTopBlobs
    auto_tops: bool = False            # LossLayer: Caffe adds missing tops (AutoTopBlobs)


def fixed(bottoms, tops, **options):
    """Exactly `bottoms` bottoms and `tops` tops."""
    return BlobCounts(bottoms, bottoms, tops, tops, **options)


ONE_IN_ONE_OUT = fixed(1, 1)


def _plural(n, word):
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _count_words(low, high, what):
    if low == high:
        return f"exactly {_plural(low, what)}"
    if high is None:
        return f"at least {_plural(low, what)}"
    return f"{low} to {high} {what}s"


def check_blob_counts(counts, num_bottoms, num_tops):
    """Layer::CheckBlobCounts: a CompileError (without a location) when a count is off."""
    if counts is None:
        return
    # Caffe adds the tops a loss layer was written without (compile_net does too).
    min_tops = 0 if counts.auto_tops else counts.min_tops
    for what, given, low, high in (("bottom", num_bottoms, counts.min_bottoms,
                                    counts.max_bottoms),
                                   ("top", num_tops, min_tops, counts.max_tops)):
        if given < low or (high is not None and given > high):
            raise CompileError(f"needs {_count_words(low, high, what)}, has {given}")
    if counts.one_top_per_bottom and num_tops != num_bottoms:
        raise CompileError(f"needs one top per bottom, has {_plural(num_bottoms, 'bottom')} "
                           f"and {_plural(num_tops, 'top')}")


# --- declarations -----------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerType:
    """One declared layer type.

    counts: a BlobCounts, a function LayerParameter -> BlobCounts for types whose counts
    depend on their parameters (Pooling's mask top, LSTM's exposed states), or None for types
    Caffe leaves unconstrained (Python). rule: `rule(layer, bottom_shapes, context) ->
    LayerShapes` (compiler.shapes)."""
    name: str
    counts: object
    traits: frozenset
    rule: object

    def blob_counts(self, layer):
        return self.counts(layer) if callable(self.counts) else self.counts

    def has(self, trait):
        return trait in self.traits


_DECLARED = {}


def declare(*type_names, counts, traits=()):
    """Decorator declaring one or more layer types with `rule` as their shape rule."""
    unknown = set(traits) - set(TRAITS)
    if unknown:
        raise ValueError(f"unknown layer traits {sorted(unknown)}; known: {', '.join(TRAITS)}")

    def decorate(rule):
        for name in type_names:
            earlier = _DECLARED.get(name)
            if earlier is not None and earlier.rule is not rule:
                raise ValueError(f"layer type {name!r} is declared twice: by "
                                 f"{_where(earlier.rule)} and by {_where(rule)}")
            _DECLARED[name] = LayerType(name, counts, frozenset(traits), rule)
        return rule
    return decorate


def _where(function):
    return f"{function.__module__}.{function.__qualname__}"


def declaration(type_name):
    """The LayerType declared for `type_name`, or None."""
    _load_declarations()
    return _DECLARED.get(type_name)


def declared_types():
    """The names of every declared layer type."""
    _load_declarations()
    return set(_DECLARED)


def has_trait(type_name, trait):
    """Whether `type_name` is declared with `trait` (False for an undeclared type)."""
    declared = declaration(type_name)
    return declared is not None and declared.has(trait)


def types_with(trait):
    _load_declarations()
    return sorted(name for name, declared in _DECLARED.items() if declared.has(trait))


_loaded = False


def _load_declarations():
    # Importing the modules declares their types; done lazily so that a declaring module can
    # import this one. Layer types defined outside compiler/ (the applications' own data layers,
    # a user's layers) register through the "lrcn.shape_rules" entry-point group.
    global _loaded
    if not _loaded:
        _loaded = True
        from .. import data_shapes  # noqa: F401  (imported to declare types)
        from . import loss, neuron, recurrent, structural, vision  # noqa: F401
        from ..shapes import load_plugins
        load_plugins("lrcn.shape_rules")
