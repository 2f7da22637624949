"""A net definition -> CompiledNet: the selected layers in order, versioned blobs, shapes, shares.

compile_net does what Caffe's Net::Init does before it allocates anything: upgrade legacy
forms, select layers by NetState (FilterNet), then connect each layer's bottoms to the latest
producer before it (AppendBottom / AppendTop), check blob counts (Layer::CheckBlobCounts),
infer shapes (the rules in compiler.shapes), and register learnable blobs with their sharing
(AppendParam). Every error is a CompileError at the offending layer's line and column.

Blob versions: Caffe lets an in-place layer (top i == bottom i) overwrite its bottom. Here each
production of a name gets its own id: the first is "x", the k-th later one "x@k", so the graph
stays acyclic and each reader names exactly the version it reads. Caffe's Split layers are not
inserted: autograd adds up the gradients of a blob read by several layers.
"""

import os
from collections import defaultdict
from dataclasses import dataclass, field as dataclass_field

import networkx as nx

from lrcn_proto import caffe_pb2

from . import layer_types, shapes, sizes
from .errors import CompileError, did_you_mean
from .netstate import describe_state, filter_net, phase_name
from .schema import Document, load_file
from .upgrade import upgrade
from .validate import check_filled_blobs_not_empty, check_fillers

AUTOMATIC_TOP = "(automatic)"   # Caffe's name for a top it adds to a loss layer (AutoTopBlobs)


def blob_counts(layer):
    """The BlobCounts Caffe enforces for `layer` (its type's declaration), or None when its
    type sets no limits or is not declared."""
    declared = layer_types.declaration(layer.type)
    return declared.blob_counts(layer) if declared is not None else None


# --- the compiled net -----------------------------------------------------------------------------

@dataclass
class CompiledLayer:
    """One selected layer, connected and shaped.

    Shapes are tuples of ints, or None where they depend on data the compiler cannot see
    (then param_shapes, params and flops are None too). `key` is the name, or "name@k" for the
    k-th later layer of a repeated name (Caffe allows repeats; graph nodes need unique keys).
    `param_specs[i]` is the ParamSpec of learnable blob i, defaults filled in; a shared blob's
    lr_mult / decay_mult are those of its whole share group. `share_keys[i]` names the tensor:
    the ParamSpec name when set, else "layer/i".
    """
    name: str
    key: str
    type: str
    param: object
    phase: str
    bottoms: list
    tops: list
    bottom_names: list
    top_names: list
    bottom_shapes: list
    top_shapes: list
    param_shapes: list
    param_specs: list
    share_keys: list
    loss_weights: list
    params: object
    flops: object
    location: tuple
    index: int       # position in the net after upgrade, before NetState selection
    attrs: object = None   # resolved attributes from the type's shape rule (None: shapes unknown)


@dataclass
class CompiledNet:
    """A net compiled for one NetState.

    blobs: versioned id -> shape. latest: blob name -> its last version (what pycaffe's
    net.blobs[name] shows). inputs: the tops of Input layers. outputs: names of blobs whose
    last version no layer reads, sorted as Caffe lists them. graph: networkx DiGraph with nodes
    ("layer", key) and ("blob", versioned id), edges bottom -> layer -> top. share_groups:
    share key -> [(layer name, blob index), ...], the owner first; every learnable blob is in
    exactly one group. memory: (parameter bytes, activation bytes) a forward pass holds in
    float32 (see compiler.sizes), None when some shape is unknown.
    """
    name: str
    phase: str
    stages: tuple
    level: int
    state: object
    layers: list
    blobs: dict
    latest: dict
    inputs: list
    outputs: list
    graph: object
    share_groups: dict
    source_file: object
    _by_key: dict = dataclass_field(default_factory=dict, repr=False)
    memory: tuple = None     # (parameter bytes, activation bytes) in float32; None: unknown

    def layer(self, key):
        """The layer with this key (its name, or "name@k" for a repeated name)."""
        try:
            return self._by_key[key]
        except KeyError:
            raise KeyError(f"no layer '{key}' in net '{self.name}' ({self.phase})") from None

    def total_params(self):
        """Learnable values, a shared blob counted once; None when some shape is unknown."""
        if any(layer.param_shapes is None for layer in self.layers):
            return None
        total = 0
        for members in self.share_groups.values():
            owner_name, index = members[0]
            total += shapes.count(self._by_key[owner_name].param_shapes[index])
        return total

    def total_flops(self):
        """Forward FLOPs of all layers; None when some shape is unknown."""
        if any(layer.flops is None for layer in self.layers):
            return None
        return sum(layer.flops for layer in self.layers)

    def loss_layers(self):
        """Layers with a nonzero loss weight on some top: what the objective sums."""
        return [layer for layer in self.layers if any(w != 0 for w in layer.loss_weights)]


def compile_net(net, phase="TRAIN", stages=(), level=0, input_shapes=None, state=None,
                outputs=None):
    """A NetParameter, compiler.Document or .prototxt path -> CompiledNet for one NetState.

    The state is built as Caffe's Net(file, phase, level, stages) builds it: the net's own
    `state`, with phase and level set and stages added. Pass `state` (a NetState, e.g. from
    solver_net_states) to use it as is. `input_shapes` ({blob: shape}) fixes the shapes of tops
    no rule can know (Python data layers, data files that are absent). `outputs` (blob names)
    chooses the net's outputs instead of Caffe's rule (the blobs no layer reads), as a
    deployed net does (compiler.deploy).
    """
    document, message = _as_document(net)
    source_file = document.filename if document else None
    upgraded = upgrade(message, document)
    places = _LayerPlaces(message, document, source_file)
    selection = filter_net(upgraded, phase, stages, level, state=state, locate=places.locate)
    builder = _NetBuilder(upgraded, selection, places, input_shapes, source_file)
    for index, layer in zip(selection.indices, selection.net.layer):
        builder.add_layer(index, layer)
    return builder.finish(outputs)


def _as_document(net):
    if isinstance(net, (str, os.PathLike)):
        net = load_file(os.fspath(net))
    if isinstance(net, Document):
        if net.kind != "net":
            raise CompileError(f"this is a {net.kind} definition, not a net", net.filename,
                               hint="compile a solver's nets with solver_net_states()")
        return net, net.message
    if not isinstance(net, caffe_pb2.NetParameter):
        raise TypeError(f"compile_net needs a NetParameter, Document or path, not "
                        f"{type(net).__name__}")
    return None, net


class _LayerPlaces:
    """Where layer i of the upgraded net was written, for located errors.

    Upgrading renames V1 `layers` to `layer` and turns net-level `input` fields into an Input
    layer placed first; this maps upgraded indices back to the fields as written.
    """

    def __init__(self, original, document, source_file):
        self.document = document
        self.file = source_file
        self.field = "layers" if len(original.layers) else "layer"
        legacy_input = bool(original.input) and bool(original.input_shape or original.input_dim)
        self.offset = 1 if legacy_input else 0

    def path(self, index, *rest):
        if index < self.offset:
            if rest[:1] == ("top",):
                return ("input",) + rest[1:]
            return ("input", 0)
        return (self.field, index - self.offset) + rest

    def locate(self, index, *rest):
        """(file, line, col) of layer `index`, or of a field inside it such as ("bottom", 2)."""
        if self.document is None:
            return (self.file, None, None)
        line, col = self.document.locate(self.path(index, *rest))
        return (self.file, line, col)

    def line(self, index):
        return self.locate(index)[1]


def _label(layer):
    return f"layer '{layer.name}' ({layer.type})"


def _with_label(layer, message):
    """`layer 'conv1' (Convolution): message`, replacing the "Convolution layer 'conv1'" some
    shape rules start their messages with, so the layer is named once and always alike."""
    own = f"{layer.type} layer '{layer.name}'"
    if message.startswith(own):
        message = message[len(own):].lstrip(":").lstrip()
    return f"{_label(layer)}: {message}"


def _plural(count, word):
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


class _NetBuilder:
    """Walks the selected layers in file order, as Net::Init does, building the CompiledNet."""

    def __init__(self, upgraded, selection, places, input_shapes, source_file):
        self.upgraded = upgraded
        self.selection = selection
        self.state = selection.state
        self.places = places
        self.input_shapes = dict(input_shapes or {})
        self.source_file = source_file
        self.layers = []
        self.by_key = {}
        self.first_of_name = {}
        self.name_counts = defaultdict(int)
        self.blobs = {}              # versioned id -> shape
        self.latest = {}             # name -> last version, anonymous tops included
        self.readable = {}           # name -> version a bottom reads (Caffe's available blobs)
        self.productions = defaultdict(int)
        self.producer = {}           # versioned id -> CompiledLayer
        self.graph = nx.DiGraph()
        self.shares = _ShareRegistry(places)
        self.budget = sizes.MemoryBudget()

    # -- one layer --------------------------------------------------------------------------

    def add_layer(self, index, written):
        compiled, written_tops = self._compile_layer(index, written)
        self._check_repeated_name(compiled)
        self._budget_for(compiled)
        compiled.tops = [self._write_top(compiled, j, anonymous=j >= written_tops)
                         for j in range(len(compiled.param.top))]
        self.shares.join(compiled)
        self._add_to_graph(compiled)
        self.layers.append(compiled)
        self.by_key[compiled.key] = compiled
        self.first_of_name.setdefault(compiled.name, compiled)

    def _compile_layer(self, index, written):
        """Check one layer, read its bottoms and infer its shapes; tops are written after.
        Returns the CompiledLayer and the number of tops the file gave it."""
        layer = caffe_pb2.LayerParameter()
        layer.CopyFrom(written)
        if not layer.HasField("phase"):
            layer.phase = self.state.phase     # Net::Init: a layer inherits the net's phase
        self._check_type(layer, index)
        counts = blob_counts(layer)
        written_tops = len(layer.top)
        self._add_automatic_tops(layer, counts)
        self._check_counts(layer, counts, index)
        self._check_per_bottom_and_top_lists(layer, index)
        bottoms = [self._read_bottom(layer, index, j) for j in range(len(layer.bottom))]
        bottom_shapes = [self.blobs[b] for b in bottoms]
        where = self.places.locate(index)
        inferred = self._infer(layer, bottom_shapes, where)
        if inferred is None:
            top_shapes, param_shapes, flops, attrs = [None] * len(layer.top), None, None, None
        else:
            top_shapes, param_shapes, flops, attrs = inferred
        check_fillers(layer, param_shapes, top_shapes,
                      lambda *path: self.places.locate(index, *path), attrs)
        check_filled_blobs_not_empty(layer, param_shapes, top_shapes,
                                     lambda *path: self.places.locate(index, *path))
        specs, keys = self._param_specs(layer, param_shapes, index)
        compiled = CompiledLayer(
            name=layer.name, key=self._key_for(layer.name), type=layer.type, param=layer,
            phase=phase_name(layer.phase), bottoms=bottoms, tops=[],
            bottom_names=list(layer.bottom), top_names=list(layer.top),
            bottom_shapes=bottom_shapes, top_shapes=top_shapes, param_shapes=param_shapes,
            param_specs=specs, share_keys=keys, loss_weights=self._loss_weights(layer),
            params=None if param_shapes is None else sum(map(shapes.count, param_shapes)),
            flops=flops, location=where, index=index, attrs=attrs)
        return compiled, written_tops

    def _check_type(self, layer, index):
        if not layer.type:
            raise CompileError(f"layer '{layer.name}' has no type", *self.places.locate(index),
                               hint='add a type, e.g. type: "Convolution"')
        known = layer_types.declared_types()
        if layer.type not in known:
            raise CompileError(f"layer '{layer.name}': unknown layer type '{layer.type}'",
                               *self.places.locate(index, "type"),
                               hint=did_you_mean(layer.type, sorted(known), "") or
                               "see compiler.layer_types.declared_types() for the known types")

    def _add_automatic_tops(self, layer, counts):
        # Caffe gives a loss layer written without a top an anonymous one to hold the loss.
        if counts is not None and counts.auto_tops:
            while len(layer.top) < counts.min_tops:
                layer.top.append(AUTOMATIC_TOP)

    def _check_counts(self, layer, counts, index):
        try:
            layer_types.check_blob_counts(counts, len(layer.bottom), len(layer.top))
        except CompileError as error:
            raise CompileError(f"{_label(layer)}: {error.message}",
                               *self.places.locate(index)) from None

    def _check_per_bottom_and_top_lists(self, layer, index):
        if layer.propagate_down and len(layer.propagate_down) != len(layer.bottom):
            raise CompileError(f"{_label(layer)}: "
                               f"{_plural(len(layer.propagate_down), 'propagate_down value')} "
                               f"for {_plural(len(layer.bottom), 'bottom')}",
                               *self.places.locate(index, "propagate_down", 0),
                               hint="give propagate_down once per bottom, or not at all")
        if layer.loss_weight and len(layer.loss_weight) != len(layer.top):
            raise CompileError(f"{_label(layer)}: "
                               f"{_plural(len(layer.loss_weight), 'loss_weight value')} "
                               f"for {_plural(len(layer.top), 'top')}",
                               *self.places.locate(index, "loss_weight", 0),
                               hint="give loss_weight once per top, or not at all")

    # -- bottoms and tops -----------------------------------------------------------------------

    def _read_bottom(self, layer, index, j):
        name = layer.bottom[j]
        version = self.readable.get(name)
        if version is None:
            raise CompileError(f"{_label(layer)}: bottom '{name}' is not produced by any "
                               "earlier layer", *self.places.locate(index, "bottom", j),
                               hint=self._missing_bottom_hint(name, index))
        return version

    def _missing_bottom_hint(self, name, index):
        selected = set(self.selection.indices)
        for other_index, other in enumerate(self.upgraded.layer):
            if name not in other.top:
                continue
            line = self.places.line(other_index)
            if other_index not in selected:
                return (f"layer '{other.name}' (line {line}) produces it but is not selected "
                        f"in this NetState ({describe_state(self.state)})")
            if other_index > index:
                return (f"layer '{other.name}' (line {line}) produces it, but after this "
                        "layer; layers run in file order")
        return did_you_mean(name, sorted(self.readable), "")

    def _write_top(self, layer, j, anonymous):
        name = layer.param.top[j]
        in_place = j < len(layer.param.bottom) and layer.param.bottom[j] == name
        if not anonymous and not in_place and name in self.readable:
            earlier = self.producer[self.readable[name]]
            raise CompileError(f"{_label(layer)}: top '{name}' is already produced by "
                               f"layer '{earlier.name}' (line {earlier.location[1]})",
                               *self.places.locate(layer.index, "top", j),
                               hint="a layer may overwrite a blob only in place (top i named "
                               "like bottom i); otherwise give the top a new name")
        if in_place:
            self._check_in_place_shape(layer, j)
        count = self.productions[name]
        self.productions[name] += 1
        version = name if count == 0 else f"{name}@{count}"
        self.blobs[version] = layer.top_shapes[j]
        self.producer[version] = layer
        self.latest[name] = version
        if not anonymous:
            # Caffe keeps anonymous tops out of reach of later bottoms (and of the outputs).
            self.readable[name] = version
        return version

    def _budget_for(self, layer):
        """Count the storage this layer adds (new learnable blobs, tops not computed in place)
        before anything is allocated; too much is an error at this layer."""
        params = layer.param_shapes or [None] * len(layer.share_keys)
        new_params = [shape for key, shape in zip(layer.share_keys, params)
                      if key not in self.shares.owners]
        bottoms = layer.param.bottom
        new_tops = [(name, shape) for j, (name, shape)
                    in enumerate(zip(layer.param.top, layer.top_shapes))
                    if not (j < len(bottoms) and bottoms[j] == name)]
        try:
            self.budget.add(_label(layer), new_params, new_tops)
        except CompileError as error:
            raise CompileError(error.message, *layer.location, hint=error.hint) from None

    def _check_in_place_shape(self, layer, j):
        # In Caffe an in-place top is its bottom's Blob: reshaping one reshapes the other
        # under the layer's feet, so an in-place layer must keep the shape.
        before, after = layer.bottom_shapes[j], layer.top_shapes[j]
        if before is not None and after is not None and tuple(before) != tuple(after):
            name = layer.top_names[j]
            raise CompileError(f"{_label(layer)}: computes '{name}' in place but changes its "
                               f"shape from {tuple(before)} to {tuple(after)}",
                               *self.places.locate(layer.index, "top", j),
                               hint="give the top a name of its own")

    def _key_for(self, name):
        count = self.name_counts[name]
        self.name_counts[name] += 1
        return name if count == 0 else f"{name}@{count}"

    def _check_repeated_name(self, layer):
        # Caffe accepts a repeated layer name, but it matches weights by name, so a repeat is
        # only safe where neither layer has weights. Real nets rely on that: LRCN's caption net
        # names its ImageData and HDF5Data layers "data", BVLC's MNIST autoencoder has two
        # weightless loss layers named "loss".
        earlier = self.first_of_name.get(layer.name)
        if earlier is None or not (self._has_weights(earlier) or self._has_weights(layer)):
            return
        raise CompileError(f"{_label(layer)}: the name '{layer.name}' is already used "
                           f"by the layer at line {earlier.location[1]}", *layer.location,
                           hint="rename one of them: weights are matched to layers by name")

    @staticmethod
    def _has_weights(layer):
        # Unknown shapes (None) give no evidence either way; with the data shapes known the
        # check is exact.
        return bool(layer.param_shapes)

    # -- shapes and parameters -------------------------------------------------------------------

    def _infer(self, layer, bottom_shapes, where):
        if any(shape is None for shape in bottom_shapes):
            return None
        context = shapes.ShapeContext(phase_name(layer.phase), self.source_file,
                                      self.input_shapes, where)
        try:
            result = shapes.infer_layer(layer, bottom_shapes, context)
        except CompileError as error:
            raise self._located(error, layer, where) from None
        if len(result.top_shapes) != len(layer.top):
            raise RuntimeError(f"the shape rule for {layer.type} gave "
                               f"{len(result.top_shapes)} top shapes for {len(layer.top)} tops")
        return list(result.top_shapes), list(result.param_shapes), result.flops, result.attrs

    @staticmethod
    def _located(error, layer, where):
        file, line, col = where
        if error.line is not None:       # the rule already pointed at a place (a data file)
            file, line, col = error.file, error.line, error.col
        return CompileError(_with_label(layer, error.message), file, line, col, error.hint)

    def _param_specs(self, layer, param_shapes, index):
        """One ParamSpec per learnable blob (Net::Init's default_param_spec where none is
        written) and the key naming each blob's tensor."""
        written = list(layer.param)
        if param_shapes is None:
            count = len(written)
        else:
            count = len(param_shapes)
            if len(written) > count:
                raise CompileError(f"{_label(layer)}: {_plural(len(written), 'param spec')} "
                                   f"for {_plural(count, 'learnable blob')}",
                                   *self.places.locate(index, "param", count),
                                   hint="remove the extra param { } blocks (Caffe: too "
                                   "many params specified for layer)")
        specs = []
        for i in range(count):
            spec = caffe_pb2.ParamSpec()
            if i < len(written):
                spec.CopyFrom(written[i])
            specs.append(spec)
        if layer_types.has_trait(layer.type, layer_types.FROZEN_BLOBS):
            self._freeze_statistics(layer, specs, len(written), index)
        keys = [spec.name or f"{layer.name}/{i}" for i, spec in enumerate(specs)]
        return specs, keys

    def _freeze_statistics(self, layer, specs, written, index):
        # BatchNormLayer::LayerSetUp: its blobs are running statistics, never learned.
        for i, spec in enumerate(specs):
            if i >= written:
                spec.lr_mult = 0
            elif spec.lr_mult != 0:
                raise CompileError(f"{_label(layer)}: batch normalization statistics cannot be "
                                   f"learned, but param {i} has lr_mult {spec.lr_mult:g}",
                                   *self.places.locate(index, "param", i),
                                   hint="set lr_mult: 0 (or leave the param blocks out)")

    def _loss_weights(self, layer):
        if layer.loss_weight:
            return list(layer.loss_weight)
        # LossLayer::LayerSetUp: a loss layer's first top weighs 1, every other top 0.
        weights = [0.0] * len(layer.top)
        if layer_types.has_trait(layer.type, layer_types.LOSS) and weights:
            weights[0] = 1.0
        return weights

    # -- graph -----------------------------------------------------------------------------------

    def _add_to_graph(self, layer):
        node = ("layer", layer.key)
        self.graph.add_node(node, kind="layer", name=layer.name, type=layer.type,
                            phase=layer.phase, index=layer.index, location=layer.location)
        for j, bottom in enumerate(layer.bottoms):
            edge = self.graph.get_edge_data(("blob", bottom), node)
            if edge is None:
                self.graph.add_edge(("blob", bottom), node, indices=[j])
            else:
                edge["indices"].append(j)     # the same blob read twice (Eltwise x + x)
        for j, top in enumerate(layer.tops):
            name = layer.top_names[j]
            self.graph.add_node(("blob", top), kind="blob", name=name,
                                shape=self.blobs[top], producer=layer.key)
            self.graph.add_edge(node, ("blob", top), indices=[j])

    def finish(self, chosen_outputs=None):
        for node, data in self.graph.nodes(data=True):
            if data["kind"] == "blob":
                # Fan-out: Caffe would insert a Split layer here; autograd sums the gradients.
                data["consumers"] = [consumer[1] for consumer in self.graph.successors(node)]
        self.shares.settle_multipliers()
        outputs = sorted(name for name, version in self.readable.items()
                         if not self.graph.out_degree(("blob", version)))
        if chosen_outputs is not None:
            unknown = [name for name in chosen_outputs if name not in self.readable]
            if unknown:
                raise CompileError(f"output '{unknown[0]}' is not a blob of the net",
                                   self.source_file,
                                   hint=did_you_mean(unknown[0], sorted(self.readable), ""))
            outputs = sorted(set(chosen_outputs))
        inputs = [name for layer in self.layers if layer.type == "Input"
                  for name in layer.top_names]
        state = self.state
        return CompiledNet(
            name=self.upgraded.name, phase=phase_name(state.phase), stages=tuple(state.stage),
            level=state.level, state=state, layers=self.layers, blobs=self.blobs,
            latest=self.latest, inputs=inputs, outputs=outputs, graph=self.graph,
            share_groups=self.shares.groups, source_file=self.source_file,
            _by_key=self.by_key,
            memory=(self.budget.param_bytes(), self.budget.activation_bytes())
            if self.budget.known else None)


class _ShareRegistry:
    """Learnable blobs grouped by share key, checked as Caffe's Net::AppendParam checks them."""

    def __init__(self, places):
        self.places = places
        self.groups = {}           # share key -> [(layer name, blob index)], owner first
        self.owners = {}           # share key -> (CompiledLayer, blob index)
        self.members = defaultdict(list)   # share key -> [ParamSpec of each member]
        self.lr_mult = {}          # share key -> (value, layer that stated it)
        self.decay_mult = {}

    def join(self, layer):
        for i, key in enumerate(layer.share_keys):
            written = layer.param.param[i] if i < len(layer.param.param) else None
            if key in self.owners:
                self._check_shape(layer, i, key, written)
            else:
                self.owners[key] = (layer, i)
                self.groups[key] = []
            self.groups[key].append((layer.name, i))
            self.members[key].append(layer.param_specs[i])
            self._agree_on("lr_mult", self.lr_mult, layer, i, key, written)
            self._agree_on("decay_mult", self.decay_mult, layer, i, key, written)

    def _check_shape(self, layer, i, key, written):
        owner, owner_index = self.owners[key]
        mine = layer.param_shapes[i] if layer.param_shapes is not None else None
        theirs = owner.param_shapes[owner_index] if owner.param_shapes is not None else None
        if mine is None or theirs is None:
            return
        permissive = (written is not None and
                      written.share_mode == caffe_pb2.ParamSpec.PERMISSIVE)
        if permissive and shapes.count(mine) != shapes.count(theirs):
            problem = (f"count mismatch: the owner's blob has shape {theirs} "
                       f"({shapes.count(theirs)} values), this layer's {mine} "
                       f"({shapes.count(mine)} values)")
            hint = "PERMISSIVE sharing needs equal element counts"
        elif not permissive and mine != theirs:
            problem = f"shape mismatch: the owner's blob has shape {theirs}, this layer's {mine}"
            hint = ("STRICT sharing (the default) needs equal shapes; share_mode: PERMISSIVE "
                    "only compares element counts")
        else:
            return
        raise CompileError(f"{_label(layer)}: cannot share param '{key}' owned by layer "
                           f"'{owner.name}' (line {owner.location[1]}): {problem}",
                           *self.places.locate(layer.index, "param", i), hint=hint)

    def _agree_on(self, field, stated, layer, i, key, written):
        """A multiplier stated on several sharers must agree; the first one stated rules."""
        if written is None or not written.HasField(field):
            return
        value = getattr(written, field)
        if key not in stated:
            stated[key] = (value, layer)
            return
        first, first_layer = stated[key]
        if value != first:
            raise CompileError(f"{_label(layer)}: shared param '{key}' has {field} "
                               f"{value:g} here but {first:g} in layer '{first_layer.name}' "
                               f"(line {first_layer.location[1]})",
                               *self.places.locate(layer.index, "param", i),
                               hint=f"give every sharer the same {field}, or state it once")

    def settle_multipliers(self):
        # Caffe keeps one lr_mult / decay_mult per shared tensor: the first stated in the group.
        for key, specs in self.members.items():
            for field, stated in (("lr_mult", self.lr_mult), ("decay_mult", self.decay_mult)):
                if key in stated:
                    for spec in specs:
                        setattr(spec, field, stated[key][0])
