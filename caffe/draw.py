"""caffe.draw: draw a NetParameter as pycaffe's draw.py does (layers as coloured records with
their kernel / stride / pad, blobs as octagons, edges labelled with num_output or the batch
size), as DOT text rendered by Graphviz's `dot`.

Differences from BVLC's draw.py: no pydot (DOT is written directly; get_pydot_graph needs
pydot installed), and `.raw` / `.dot` / `.gv` output is the DOT text itself without Graphviz.
"""

import os
import tempfile

from compiler.review import dot_quote, render_with_graphviz
from lrcn_proto import caffe_pb2
from runtime.weights import write_bytes_atomically

from ._caffe import unsupported

LAYER_STYLE_DEFAULT = {"shape": "record", "fillcolor": "#6495ED", "style": "filled"}
NEURON_LAYER_STYLE = {"shape": "record", "fillcolor": "#90EE90", "style": "filled"}
BLOB_STYLE = {"shape": "octagon", "fillcolor": "#E0E0E0", "style": "filled"}
_LEARNING_LAYERS = ("Convolution", "Deconvolution", "InnerProduct")
_TEXT_FORMATS = ("raw", "dot", "gv")


def get_pooling_types_dict():
    """Pooling method number -> name."""
    return {value.number: name for name, value in
            caffe_pb2.PoolingParameter.PoolMethod.DESCRIPTOR.values_by_name.items()}


def get_edge_label(layer):
    """The label of a layer's top edges: batch size, or num_output."""
    if layer.type == "Data":
        return f"Batch {layer.data_param.batch_size}"
    if layer.type in ("Convolution", "Deconvolution"):
        return str(layer.convolution_param.num_output)
    if layer.type == "InnerProduct":
        return str(layer.inner_product_param.num_output)
    return ""


def get_layer_lr_mult(layer):
    """(weights lr_mult, bias lr_mult) of a Convolution, Deconvolution or InnerProduct layer."""
    if layer.type not in _LEARNING_LAYERS:
        raise ValueError(f"{layer.type} layers do not have a learning rate multiplier")
    specs = list(layer.param)
    if len(specs) > 2:
        raise ValueError("Could not parse the learning rate multiplier")
    multipliers = [spec.lr_mult for spec in specs]
    return tuple(multipliers + [1.0] * (2 - len(multipliers)))


def get_layer_label(layer, rankdir, display_lrm=False):
    """Name, type, kernel / stride / pad for spatial layers, optionally the lr multipliers;
    separated by spaces in a vertical graph (TB / BT), by line breaks otherwise."""
    separator = " " if rankdir in ("TB", "BT") else "\n"
    parts = [layer.name]
    if layer.type == "Pooling":
        parts.append(f"({layer.type} {get_pooling_types_dict()[layer.pooling_param.pool]})")
    else:
        parts.append(f"({layer.type})")
    if layer.type in ("Convolution", "Deconvolution", "Pooling"):
        if layer.type == "Pooling":
            pool = layer.pooling_param
            kernel, stride, pad = pool.kernel_size, pool.stride, pool.pad
        else:
            conv = layer.convolution_param
            kernel = conv.kernel_size[0] if len(conv.kernel_size) else 1
            stride = conv.stride[0] if len(conv.stride) else 1
            pad = conv.pad[0] if len(conv.pad) else 0
        parts.append(separator.join([f"kernel size: {kernel}", f"stride: {stride}",
                                     f"pad: {pad}"]))
    if display_lrm and layer.type in _LEARNING_LAYERS:
        weights_mult, bias_mult = get_layer_lr_mult(layer)
        if weights_mult or bias_mult:
            parts.append(f"lr mult: {weights_mult:.1f}, {bias_mult:.1f}")
    return separator.join(parts)


def choose_color_by_layertype(layertype):
    return {"Convolution": "#FF5050", "Deconvolution": "#FF5050", "Pooling": "#FF9900",
            "InnerProduct": "#CC33FF"}.get(layertype, "#6495ED")


def _included(layer, phase):
    if phase is None:
        return True
    if len(layer.include) and len(layer.exclude):
        raise ValueError(f"layer {layer.name} has both include and exclude specified.")
    included = not len(layer.include)
    for rule in layer.include:
        included = included or rule.phase == phase
    for rule in layer.exclude:
        included = included and rule.phase != phase
    return included


def _attributes(style, label):
    items = dict(style, label=label)
    return "[" + ", ".join(f"{key}={dot_quote(value)}" for key, value in items.items()) + "]"


def get_dot(caffe_net, rankdir, label_edges=True, phase=None, display_lrm=False):
    """The net as DOT text (what the drawing functions render)."""
    lines = [f"digraph {dot_quote(caffe_net.name or 'Net')} {{",
             f"  rankdir={dot_quote(rankdir)};"]
    blobs, edges = [], []
    for layer in caffe_net.layer:
        if not _included(layer, phase):
            continue
        node = f"{layer.name}_{layer.type}"
        in_place = (len(layer.bottom) == 1 and len(layer.top) == 1
                    and layer.bottom[0] == layer.top[0])
        style = NEURON_LAYER_STYLE if in_place else dict(
            LAYER_STYLE_DEFAULT, fillcolor=choose_color_by_layertype(layer.type))
        lines.append(f"  {dot_quote(node)} "
                     f"{_attributes(style, get_layer_label(layer, rankdir, display_lrm))};")
        for bottom in layer.bottom:
            blobs.append(bottom)
            edges.append((bottom + "_blob", node, ""))
        for top in layer.top:
            blobs.append(top)
            edges.append((node, top + "_blob", get_edge_label(layer) if label_edges else ""))
    for blob in dict.fromkeys(blobs):
        lines.append(f"  {dot_quote(blob + '_blob')} {_attributes(BLOB_STYLE, blob)};")
    for source, target, label in edges:
        lines.append(f"  {dot_quote(source)} -> {dot_quote(target)} [label={dot_quote(label)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def get_pydot_graph(caffe_net, rankdir, label_edges=True, phase=None, display_lrm=False):
    """The graph as a pydot object (needs pydot: `pip install pydot`)."""
    try:
        import pydot
    except ImportError:
        raise unsupported("caffe.draw.get_pydot_graph", "pydot is not installed (pip install "
                          "pydot), or use caffe.draw.draw_net") from None
    return pydot.graph_from_dot_data(get_dot(caffe_net, rankdir, label_edges, phase,
                                             display_lrm))[0]


def draw_net(caffe_net, rankdir, ext="png", phase=None, display_lrm=False):
    """The drawing as bytes in format `ext` (png, svg, pdf through Graphviz; raw / dot: the
    DOT text)."""
    dot = get_dot(caffe_net, rankdir, phase=phase, display_lrm=display_lrm)
    if ext in _TEXT_FORMATS:
        return dot.encode("utf-8")
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "net." + ext)
        render_with_graphviz(dot, ext, path)
        with open(path, "rb") as handle:
            return handle.read()


def draw_net_to_file(caffe_net, filename, rankdir="LR", phase=None, display_lrm=False):
    """Draw to `filename`, in the format its extension names (.raw / .dot: DOT text)."""
    ext = filename[filename.rfind(".") + 1:]
    write_bytes_atomically(filename, draw_net(caffe_net, rankdir, ext, phase, display_lrm))
