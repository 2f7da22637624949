"""Code-review views of a net: a layer table (lrcn-show), a semantic diff (lrcn-diff) and a
graph drawing (lrcn-draw).

All three read compiled nets (compiler.graph.compile_net), so what they show is what the
runtime will build: the layers selected in one NetState, with inferred shapes, parameter counts
and FLOPs. The diff compares upgraded messages, so field order, layout, comments and legacy
spellings (V1 `layers`, net-level `input_dim`) never show up as changes.
"""

import json
import math
import os
import shutil
import struct
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field as dataclass_field
from difflib import SequenceMatcher

import yaml
from google.protobuf import descriptor as _descriptor

from lrcn_proto import caffe_pb2

from .errors import CompileError
from .files import temporary_path
from .graph import compile_net
from .netstate import filter_net, with_stage_choice
from .schema import Document
from .sizes import memory_text
from .upgrade import upgrade

FD = _descriptor.FieldDescriptor


@dataclass
class NetOptions:
    """The NetState and shape overrides a tool compiles with (compile_net's arguments)."""
    phase: str = "TRAIN"
    stages: tuple = ()
    level: int = 0
    input_shapes: dict = dataclass_field(default_factory=dict)

    def compile(self, net):
        return compile_net(net, phase=self.phase, stages=tuple(self.stages), level=self.level,
                           input_shapes=self.input_shapes or None)

    def compile_for_review(self, document):
        """compile() for a tool that shows the result: (compiled, note), refusing a net or
        NetState with no layers and naming the stage sets (netstate.with_stage_choice)."""
        net = upgrade(document.message, document)
        return with_stage_choice(lambda: self.compile(document), net, self.phase,
                                 tuple(self.stages), self.level, document.filename)


def require_net(document, tool):
    """A located error for a solver file given to a tool that reads nets."""
    if document.kind != "net":
        raise CompileError(f"this is a {document.kind} definition; {tool} reads net files",
                           document.filename,
                           hint="give it the net file the solver names (net: / train_net:)")


# --- numbers and shapes as people read them ------------------------------------------------------

_UNITS = ((10 ** 12, "T"), (10 ** 9, "G"), (10 ** 6, "M"), (10 ** 3, "K"))


def human_count(number):
    """60965224 -> '60.97M'; numbers under a thousand stay exact; None (unknown) -> '?'."""
    if number is None:
        return "?"
    for factor, prefix in _UNITS:
        if abs(number) >= factor:
            return f"{number / factor:.2f}{prefix}"
    return str(number)


def human_flops(number):
    """1450000000 -> '1.45 GFLOPs'."""
    if number is None:
        return "? FLOPs"
    text = human_count(number)
    if text[-1].isalpha():
        return f"{text[:-1]} {text[-1]}FLOPs"
    return f"{text} FLOPs"


def shape_text(shape):
    """(10, 3, 227, 227) -> '10x3x227x227'; a 0-axis (scalar) shape -> '()'; None -> '?'."""
    if shape is None:
        return "?"
    if len(shape) == 0:
        return "()"
    return "x".join(str(d) for d in shape)


def exact_count(number):
    return "?" if number is None else f"{number:,}"


# =================================================================================================
# lrcn-show
# =================================================================================================

def layer_rows(compiled):
    """One dict per compiled layer, keys in the fixed order the yaml/json outputs use."""
    return [{
        "name": layer.name,
        "type": layer.type,
        "bottoms": list(layer.bottom_names),
        "tops": list(layer.top_names),
        "top_shapes": [None if s is None else list(s) for s in layer.top_shapes],
        "params": layer.params,
        "flops": layer.flops,
    } for layer in compiled.layers]


def show_data(compiled):
    """The whole lrcn-show report as plain data (what --format json / yaml print)."""
    return {
        "net": compiled.name,
        "phase": compiled.phase,
        "stages": list(compiled.stages),
        "level": compiled.level,
        "layers": layer_rows(compiled),
        "totals": {"params": compiled.total_params(), "flops": compiled.total_flops(),
                   "layers": len(compiled.layers),
                   "memory_bytes": None if compiled.memory is None else sum(compiled.memory)},
    }


def show_json(compiled):
    """JSON with one layer per line, so a textual diff of two reports is one line per layer."""
    data = show_data(compiled)
    lines = ["{"]
    for key in ("net", "phase", "stages", "level"):
        lines.append(f"  {json.dumps(key)}: {json.dumps(data[key])},")
    lines.append('  "layers": [')
    rows = [f"    {json.dumps(row)}" for row in data["layers"]]
    lines.append(",\n".join(rows))
    lines.append("  ],")
    lines.append(f'  "totals": {json.dumps(data["totals"])}')
    lines.append("}")
    return "\n".join(line for line in lines if line) + "\n"


def show_yaml(compiled):
    # default_flow_style=None writes lists of scalars inline ([10, 1000]) and everything else
    # as blocks: one layer per list item, one field per line.
    return yaml.safe_dump(show_data(compiled), sort_keys=False, default_flow_style=None,
                          width=10 ** 6)


def show_table(compiled):
    """Aligned columns with human units, then the totals."""
    borrowed = _layers_sharing_earlier_params(compiled)
    header = ("name", "type", "bottoms", "tops", "top shapes", "params", "FLOPs")
    rows = []
    for layer in compiled.layers:
        params = human_count(layer.params) + ("*" if layer.key in borrowed else "")
        rows.append((layer.name, layer.type, ", ".join(layer.bottom_names) or "-",
                     ", ".join(layer.top_names) or "-",
                     ", ".join(shape_text(s) for s in layer.top_shapes) or "-",
                     params, human_count(layer.flops)))
    right_aligned = {5, 6}
    widths = [max(len(row[i]) for row in rows + [header]) for i in range(len(header))]

    def line(row):
        cells = [cell.rjust(widths[i]) if i in right_aligned else cell.ljust(widths[i])
                 for i, cell in enumerate(row)]
        return "  ".join(cells).rstrip()

    stages = ", ".join(compiled.stages) or "none"
    out = [f"net {compiled.name or '(unnamed)'}: phase {compiled.phase}, stages {stages}, "
           f"level {compiled.level}", "", line(header)]
    out.extend(line(row) for row in rows)
    total_params = compiled.total_params()
    out.append("")
    params = f"{human_count(total_params)} params"
    if human_count(total_params) != exact_count(total_params):
        params += f" ({exact_count(total_params)})"
    out.append(f"total: {len(compiled.layers)} layers, {params}, "
               f"{human_flops(compiled.total_flops())}")
    out.append(memory_text(compiled.memory))
    if borrowed:
        out.append("* uses parameters owned by an earlier layer; the total counts them once")
    return "\n".join(out) + "\n"


def _layers_sharing_earlier_params(compiled):
    """Keys of layers some of whose learnable blobs are owned by another layer."""
    owner_of = {}
    for key, members in compiled.share_groups.items():
        owner_of[key] = members[0][0]
    return {layer.key for layer in compiled.layers
            if any(owner_of.get(key, layer.name) != layer.name for key in layer.share_keys)}


SHOW_FORMATS = {"table": show_table, "yaml": show_yaml, "json": show_json}


# =================================================================================================
# lrcn-diff
# =================================================================================================

@dataclass
class Change:
    """One entry of a diff: `mark` is '+' (added), '-' (removed), '~' (changed) or '!' (a note
    that does not by itself make the files differ, e.g. a net that does not compile)."""
    mark: str
    title: str
    details: list = dataclass_field(default_factory=list)


# Include / exclude rules are read as a whole (any rule matching decides), so they are shown
# as whole lists rather than rule by rule.
_WHOLE_LIST_FIELDS = {"include", "exclude"}


def render_scalar(field, value):
    """A field value in the text a reviewer reads: enum names, true/false, shortest floats."""
    if field.type == FD.TYPE_ENUM:
        named = field.enum_type.values_by_number.get(value)
        return named.name if named else str(value)
    if field.type == FD.TYPE_BOOL:
        return "true" if value else "false"
    if field.type == FD.TYPE_FLOAT:
        return _shortest_float32(value)
    if field.type == FD.TYPE_DOUBLE:
        return repr(value)
    if field.type == FD.TYPE_BYTES:
        value = value.decode("utf-8", "backslashreplace")
    if field.type in (FD.TYPE_STRING, FD.TYPE_BYTES):
        return _render_string(value)
    return str(value)


def _render_string(text):
    # Blob and layer names read best bare ([conv1]); anything that could be mistaken for
    # punctuation of the diff line (spaces, commas, brackets, arrows, nothing) is quoted.
    if text and all(c.isalnum() or c in "_./@:+-" for c in text) and "->" not in text:
        return text
    return json.dumps(text)


def _shortest_float32(value):
    # A float field holds a float32; 0.0001 comes back as 9.999999747378752e-05. Print the
    # shortest decimal that reads back as the same float32, as the author most likely wrote it.
    if math.isnan(value) or math.isinf(value):
        return repr(value)
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        if struct.unpack("f", struct.pack("f", float(text)))[0] == value:
            return text
    return repr(value)


def render_message(message):
    """A message on one line: {phase: TRAIN, stage: [factored]}; fields in schema order."""
    parts = []
    for field in message.DESCRIPTOR.fields:
        if field.is_repeated:
            values = getattr(message, field.name)
            if values:
                parts.append(f"{field.name}: {_render_list(field, values)}")
        elif message.HasField(field.name):
            parts.append(f"{field.name}: {_render_value(field, getattr(message, field.name))}")
    return "{" + ", ".join(parts) + "}"


def _render_value(field, value):
    if field.type == FD.TYPE_MESSAGE:
        return render_message(value)
    return render_scalar(field, value)


def _render_list(field, values):
    return "[" + ", ".join(_render_value(field, v) for v in values) + "]"


def message_changes(old, new, prefix=""):
    """`path: old -> new` for every field whose value or presence differs, in schema order.

    Presence counts: a field written with its default value differs from one left unset
    (protobuf equality; for some fields, such as NetStateRule.phase, unset means "any").
    """
    lines = []
    for field in new.DESCRIPTOR.fields:
        path = prefix + field.name
        if field.is_repeated:
            lines.extend(_repeated_changes(field, getattr(old, field.name),
                                           getattr(new, field.name), path))
        elif field.type == FD.TYPE_MESSAGE:
            lines.extend(_submessage_changes(field, old, new, path))
        else:
            lines.extend(_scalar_changes(field, old, new, path))
    return lines


def _scalar_changes(field, old, new, path):
    was_set, is_set = old.HasField(field.name), new.HasField(field.name)
    before, after = getattr(old, field.name), getattr(new, field.name)
    if was_set == is_set and (not is_set or _same(before, after)):
        return []
    shown_before = render_scalar(field, before) if was_set else "(unset)"
    shown_after = render_scalar(field, after) if is_set else "(unset)"
    return [f"{path}: {shown_before} -> {shown_after}"]


def _same(a, b):
    # nan == nan for the purpose of "did the author change this value".
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _submessage_changes(field, old, new, path):
    was_set, is_set = old.HasField(field.name), new.HasField(field.name)
    if not was_set and not is_set:
        return []
    inner = message_changes(getattr(old, field.name), getattr(new, field.name), path + ".")
    if inner or was_set == is_set:
        return inner
    # Only the presence of an empty block changed (e.g. `transform_param {}` added).
    before = render_message(getattr(old, field.name)) if was_set else "(unset)"
    after = render_message(getattr(new, field.name)) if is_set else "(unset)"
    return [f"{path}: {before} -> {after}"]


def _repeated_changes(field, before, after, path):
    if list(before) == list(after):
        return []
    if (field.type == FD.TYPE_MESSAGE and len(before) == len(after)
            and field.name not in _WHOLE_LIST_FIELDS):
        lines = []
        for i, (a, b) in enumerate(zip(before, after)):
            lines.extend(message_changes(a, b, f"{path}[{i}]."))
        return lines
    return [f"{path}: {_render_list(field, before)} -> {_render_list(field, after)}"]


# --- nets --------------------------------------------------------------------------------------

def layer_keys(net):
    """A key per layer of an upgraded net: its name, "name@k" for the k-th later repeat (the
    keys compiler.graph gives), so layers match across two versions of a file by name."""
    seen = defaultdict(int)
    keys = []
    for layer in net.layer:
        count = seen[layer.name]
        seen[layer.name] += 1
        keys.append(layer.name if count == 0 else f"{layer.name}@{count}")
    return keys


@dataclass
class _Side:
    """One of the two files being compared, upgraded and (when it compiles) compiled."""
    document: object
    net: object                       # upgraded NetParameter
    keys: list
    by_key: dict
    compiled: object = None
    compile_error: object = None
    selected: list = dataclass_field(default_factory=list)    # keys in the NetState, in order

    @classmethod
    def of(cls, document, options):
        net = upgrade(document.message, document)
        keys = layer_keys(net)
        side = cls(document, net, keys, dict(zip(keys, net.layer)))
        try:
            if net.layer:
                side.compiled, _ = options.compile_for_review(document)
            else:   # an added or deleted file: one side is legitimately empty
                side.compiled = options.compile(document)
        except CompileError as error:
            side.compile_error = error
        side.selected = side._selected_keys(options)
        return side

    def _selected_keys(self, options):
        if self.compiled is not None:
            return [self.keys[layer.index] for layer in self.compiled.layers]
        try:
            selection = filter_net(self.net, options.phase, tuple(options.stages), options.level)
        except CompileError:
            return list(self.keys)
        return [self.keys[i] for i in selection.indices]

    def compiled_by_key(self):
        if self.compiled is None:
            return {}
        return {self.keys[layer.index]: layer for layer in self.compiled.layers}


def diff_documents(old, new, options=None):
    """The semantic differences between two loaded files (both nets or both solvers)."""
    options = options or NetOptions()
    if old.kind != new.kind:
        raise CompileError(f"cannot compare a {old.kind} ({old.filename}) with a {new.kind} "
                           f"({new.filename})", new.filename)
    if old.kind == "solver":
        details = message_changes(upgrade(old.message), upgrade(new.message))
        return [Change("~", "solver", details)] if details else []
    return diff_nets(_Side.of(old, options), _Side.of(new, options), options)


def diff_nets(old, new, options):
    changes = []
    net_details = _net_level_changes(old, new, options)
    if net_details:
        changes.append(Change("~", "net", net_details))
    changes.extend(_layer_changes(old, new))
    if changes:
        # A net that does not compile has no shapes to compare; say so, since the missing
        # shape lines would otherwise read as "shapes unchanged".
        notes = [Change("!", f"{side.compile_error.location}: {side.compile_error.message}",
                        [f"(does not compile in {options.phase}, so its shapes and parameter "
                         "counts are not compared)"]
                        + ([f"hint: {side.compile_error.hint}"] if side.compile_error.hint
                           else []))
                 for side in (old, new) if side.compile_error is not None]
        changes = notes + changes
    return changes


def _net_level_changes(old, new, options):
    before, after = caffe_pb2.NetParameter(), caffe_pb2.NetParameter()
    before.CopyFrom(old.net)
    after.CopyFrom(new.net)
    for message in (before, after):
        message.ClearField("layer")
    details = message_changes(before, after)
    if old.compiled is not None and new.compiled is not None:
        for what, count in (("params", lambda net: net.total_params()),
                            ("FLOPs", lambda net: net.total_flops())):
            a, b = count(old.compiled), count(new.compiled)
            if a != b:
                details.append(f"total {what} ({options.phase}): {exact_count(a)} -> "
                               f"{exact_count(b)}")
    return details


def _layer_changes(old, new):
    moved = _order_changes(old, new)
    old_compiled, new_compiled = old.compiled_by_key(), new.compiled_by_key()
    entries = []       # (sort key, Change): removed layers sit after their last common neighbour
    for index, key in enumerate(new.keys):
        layer = new.by_key[key]
        if key not in old.by_key:
            entries.append(((index, 0, 0), Change("+", _layer_summary(key, layer))))
            continue
        details = message_changes(old.by_key[key], layer)
        details.extend(moved.get(key, []))
        details.extend(_compiled_changes(old_compiled.get(key), new_compiled.get(key)))
        if details:
            entries.append(((index, 0, 0), Change("~", f"layer {key} ({layer.type})", details)))
    new_position = {key: i for i, key in enumerate(new.keys)}
    anchor = -1
    for index, key in enumerate(old.keys):
        if key in new_position:
            anchor = new_position[key]
        else:
            layer = old.by_key[key]
            entries.append(((anchor, 1, index), Change("-", _layer_summary(key, layer))))
    return [change for _, change in sorted(entries, key=lambda entry: entry[0])]


def _layer_summary(key, layer):
    title = (f"layer {key} ({layer.type}): {_bracket(layer.bottom)} -> "
             f"{_bracket(layer.top)}")
    for rules in ("include", "exclude"):
        if getattr(layer, rules):
            field = layer.DESCRIPTOR.fields_by_name[rules]
            title += f", {rules} {_render_list(field, getattr(layer, rules))}"
    return title


def _bracket(names):
    return "[" + ", ".join(_render_string(n) for n in names) + "]"


def _compiled_changes(before, after):
    """Output-shape and parameter-count changes of a layer compiled in both files."""
    if before is None or after is None:
        return []
    lines = []
    for j, (a, b) in enumerate(zip(before.top_shapes, after.top_shapes)):
        if a != b:
            lines.append(f"top {_render_string(after.top_names[j])} shape: {shape_text(a)} -> "
                         f"{shape_text(b)}")
    if before.params != after.params:
        lines.append(f"params: {exact_count(before.params)} -> {exact_count(after.params)}")
    return lines


def _order_changes(old, new):
    """Layer key -> lines for moves that change what a layer reads or what reads it.

    Layers run in file order, and a blob name read after an in-place or repeated write sees
    the later value, so a move matters exactly when two layers that share a blob name, and at
    least one of them writes it, swap their relative order. The layers called "moved" are
    those outside the common ordering difflib finds (the rest kept their order), so a
    swapped pair always has a moved member; each swapped dependency is reported once, under
    that member. Moving independent layers is not a change.
    """
    old_order = [k for k in old.selected if k in new.by_key]
    new_order = [k for k in new.selected if k in old.by_key]
    common = set(old_order) & set(new_order)
    old_order = [k for k in old_order if k in common]
    new_order = [k for k in new_order if k in common]
    kept = set()
    for block in SequenceMatcher(None, old_order, new_order, autojunk=False).get_matching_blocks():
        kept.update(old_order[block.a:block.a + block.size])
    old_position = {k: i for i, k in enumerate(old_order)}
    new_position = {k: i for i, k in enumerate(new_order)}
    reported, lines = set(), defaultdict(list)
    for key in new_order:
        if key in kept:
            continue
        for other in new_order:
            pair = frozenset((key, other))
            if other == key or pair in reported:
                continue
            swapped = ((old_position[key] < old_position[other]) !=
                       (new_position[key] < new_position[other]))
            blob = _dependency_blob(old, new, key, other) if swapped else None
            if blob is not None:
                reported.add(pair)
                now = "after" if new_position[key] > new_position[other] else "before"
                was = "before" if now == "after" else "after"
                lines[key].append(f"moved: now runs {now} {other} (was {was}; both use blob "
                                  f"{_render_string(blob)})")
    return lines


def _dependency_blob(old, new, first, second):
    """A blob name both layers use where at least one writes it (in either version), or None."""
    def uses(key):
        reads, writes = set(), set()
        for side in (old, new):
            layer = side.by_key[key]
            reads.update(layer.bottom)
            writes.update(layer.top)
        return reads, writes

    reads_a, writes_a = uses(first)
    reads_b, writes_b = uses(second)
    shared = (writes_a & (reads_b | writes_b)) | (writes_b & (reads_a | writes_a))
    return min(shared) if shared else None


# --- text output -------------------------------------------------------------------------------

_COLOURS = {"+": "\033[32m", "-": "\033[31m", "~": "\033[33m", "!": "\033[1;31m"}
_RESET = "\033[0m"


def render_changes(changes, colour=False):
    lines = []
    for change in changes:
        title = f"{change.mark} {change.title}"
        lines.append(f"{_COLOURS[change.mark]}{title}{_RESET}" if colour else title)
        lines.extend(f"    {detail}" for detail in change.details)
    return "".join(line + "\n" for line in lines)


def counts_as_difference(changes):
    return any(change.mark != "!" for change in changes)


def empty_document_like(other, filename):
    """The side of a git diff that does not exist (/dev/null), as an empty file of the same
    kind as the other side, so an added file shows every layer as added."""
    message = type(other.message)()
    return Document(message, other.kind, filename)


# =================================================================================================
# lrcn-draw
# =================================================================================================

RANKDIRS = ("LR", "TB", "BT", "RL")

# Caffe's python/caffe/draw.py colours, so drawings look like the ones people know.
_LAYER_COLOURS = {"Convolution": "#FF5050", "Deconvolution": "#FF5050", "Pooling": "#FF9900",
                  "InnerProduct": "#CC33FF"}
_DEFAULT_LAYER_COLOUR = "#6495ED"
_IN_PLACE_COLOUR = "#90EE90"
_BLOB_COLOUR = "#E0E0E0"


def dot_quote(text):
    """A DOT quoted string; newlines become DOT's \\n line breaks in labels."""
    escaped = str(text).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\r", "").replace("\n", "\\n") + '"'


def _attributes(**attributes):
    return "[" + ", ".join(f"{key}={dot_quote(value)}" for key, value in attributes.items()) + "]"


def layer_node_id(layer):
    return f"layer:{layer.key}"


def blob_node_id(name):
    return f"blob:{name}"


def is_in_place(layer):
    return any(j < len(layer.bottom_names) and layer.bottom_names[j] == top
               for j, top in enumerate(layer.top_names))


def layer_label(layer):
    """name, type, the parameters that decide its shape, and its learnable-value count."""
    lines = [layer.name, f"({layer.type})"]
    lines.extend(_key_params(layer))
    if layer.params:
        lines.append(f"{human_count(layer.params)} params")
    return "\n".join(lines)


def _key_params(layer):
    # Geometry comes from the compiler's resolved attributes (Caffe's defaults and spellings
    # applied); it is unknown, and left out, where the layer's bottom shapes are.
    param, attrs = layer.param, layer.attrs
    if param.type in ("Convolution", "Deconvolution"):
        conv = param.convolution_param
        lines = [f"num_output {conv.num_output}"]
        if conv.group != 1:
            lines[-1] += f", group {conv.group}"
        if attrs is not None:
            lines.insert(0, f"kernel {_dims_text(attrs.kernel)}, stride "
                            f"{_dims_text(attrs.stride)}, pad {_dims_text(attrs.pad)}")
        return lines
    if param.type == "Pooling":
        method = caffe_pb2.PoolingParameter.PoolMethod.Name(param.pooling_param.pool)
        if param.pooling_param.global_pooling:
            return [f"{method} global"]
        if attrs is None:
            return [method]
        return [f"{method} kernel {_dims_text(attrs.kernel)}, stride {_dims_text(attrs.stride)}, "
                f"pad {_dims_text(attrs.pad)}"]
    if param.type == "InnerProduct":
        return [f"num_output {param.inner_product_param.num_output}"]
    if param.type in ("LSTM", "RNN"):
        return [f"num_output {param.recurrent_param.num_output}"]
    if param.type == "Embed":
        embed = param.embed_param
        return [f"input_dim {embed.input_dim}, num_output {embed.num_output}"]
    if param.type == "Dropout":
        return [f"ratio {_shortest_float32(param.dropout_param.dropout_ratio)}"]
    if param.type == "LRN":
        return [f"local_size {param.lrn_param.local_size}"]
    return []


def _dims_text(values):
    """(11, 11) -> '11'; (3, 5) -> '3x5' (h x w)."""
    return str(values[0]) if len(set(values)) == 1 else "x".join(map(str, values))


@dataclass
class DrawNode:
    id: str
    label: str
    colour: str
    is_blob: bool


def draw_elements(compiled):
    """The drawing of a compiled net as (nodes, edges), each in a stable order.

    Like Caffe's draw_net: one node per blob NAME (the versions an in-place layer writes
    collapse into it) and in-place layers in their own colour, with an edge into and out of
    the blob they rewrite. Blob labels carry the shape of the blob's last version.
    """
    nodes, declared = [], set()
    for layer in compiled.layers:
        for name in list(layer.bottom_names) + list(layer.top_names):
            if name not in declared:
                declared.add(name)
                shape = compiled.blobs.get(compiled.latest.get(name))
                nodes.append(DrawNode(blob_node_id(name), f"{name}\n{shape_text(shape)}",
                                      _BLOB_COLOUR, True))
        colour = (_IN_PLACE_COLOUR if is_in_place(layer)
                  else _LAYER_COLOURS.get(layer.type, _DEFAULT_LAYER_COLOUR))
        nodes.append(DrawNode(layer_node_id(layer), layer_label(layer), colour, False))
    edges = []
    for layer in compiled.layers:
        node = layer_node_id(layer)
        edges.extend((blob_node_id(name), node) for name in layer.bottom_names)
        edges.extend((node, blob_node_id(name)) for name in layer.top_names)
    return nodes, edges


def net_title(compiled):
    return f"{compiled.name or '(unnamed)'} ({compiled.phase})"


def net_to_dot(compiled, rankdir="LR"):
    """The compiled net as DOT text (see draw_elements): layers are boxes, blobs octagons.
    One statement per line."""
    lines = [f"digraph {dot_quote(compiled.name or 'net')} {{",
             f"  graph {_attributes(rankdir=rankdir, label=net_title(compiled), labelloc='t')};",
             '  node [fontsize="10"];']
    nodes, edges = draw_elements(compiled)
    for node in nodes:
        shape = "octagon" if node.is_blob else "box"
        attributes = _attributes(shape=shape, style="filled", fillcolor=node.colour,
                                 label=node.label)
        lines.append(f"  {dot_quote(node.id)} {attributes};")
    lines.extend(f"  {dot_quote(source)} -> {dot_quote(target)};" for source, target in edges)
    lines.append("}")
    return "\n".join(lines) + "\n"


# Output formats by -o extension: DOT text is written directly; the rest go through Graphviz.
DOT_EXTENSIONS = (".dot", ".gv")
GRAPHVIZ_FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf"}


def output_format(path):
    """'dot' or a Graphviz -T format for an output path; CompileError for other extensions."""
    extension = os.path.splitext(path)[1].lower()
    if path == "-" or extension in DOT_EXTENSIONS:
        return "dot"
    if extension in GRAPHVIZ_FORMATS:
        return GRAPHVIZ_FORMATS[extension]
    known = ", ".join(DOT_EXTENSIONS + tuple(GRAPHVIZ_FORMATS))
    raise CompileError(f"cannot tell the output format from '{path}'", path,
                       hint=f"name the file with one of {known}")


def graphviz_available():
    return shutil.which("dot") is not None


def render_with_graphviz(dot_text, graphviz_format, path):
    """Run Graphviz's `dot` and write its output to `path` (replaced only when dot succeeds)."""
    executable = shutil.which("dot")
    if executable is None:
        # Graphviz is a system program (no pip package ships it).
        raise CompileError(f"writing .{graphviz_format} needs Graphviz's dot, which is not "
                           "installed: apt-get install graphviz (or brew / conda install "
                           "graphviz); .svg and .dot work without it", path)
    # dot creates the temporary itself, so the drawing gets the user's umask.
    temporary = temporary_path(os.path.abspath(path))
    try:
        result = subprocess.run([executable, f"-T{graphviz_format}", "-o", temporary],
                                input=dot_text.encode("utf-8"), capture_output=True)
        if result.returncode != 0:
            message = result.stderr.decode("utf-8", "replace").strip()
            raise CompileError(f"Graphviz's dot failed: {message}", path)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
