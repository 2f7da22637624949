"""Legacy net and solver forms -> the current schema, following Caffe's upgrade_proto.cpp.

parse_* return files exactly as written; `upgrade` is the separate step that Caffe runs when it
reads a file (UpgradeNetAsNeeded / UpgradeSolverAsNeeded). It returns a new message and never
changes its argument.
"""

from lrcn_proto import caffe_pb2

from .errors import CompileError

# V1LayerParameter.LayerType -> LayerParameter.type, as UpgradeV1LayerType spells them.
V1_LAYER_TYPES = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution", "DATA": "Data", "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise",
    "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice",
    "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}

# SolverParameter.SolverType -> SolverParameter.type (UpgradeSolverType).
SOLVER_TYPES = {"SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad",
                "RMSPROP": "RMSProp", "ADADELTA": "AdaDelta", "ADAM": "Adam"}

# V1 fields that do not copy across by name: handled one by one in _upgrade_v1_layer.
_V1_SPECIAL = {"type", "param", "blob_share_mode", "blobs_lr", "weight_decay", "layer"}

# Data layers whose old params carried the transformation fields (UpgradeNetDataTransformation).
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")
_DATA_PARAMS_WITH_TRANSFORM = ("data_param", "image_data_param", "window_data_param")
# WindowData reads window_data_param.scale itself (transform_param.scale plays no part in it).
_LIVE_FIELDS = {("window_data_param", "scale")}


def upgrade(message, document=None):
    """A NetParameter or SolverParameter in any legacy form -> a new, current-form message."""
    if isinstance(message, caffe_pb2.SolverParameter):
        return upgrade_solver(message)
    return upgrade_net(message, document)


def upgrade_net(net, document=None):
    upgraded = caffe_pb2.NetParameter()
    upgraded.CopyFrom(net)
    if upgraded.layers:
        _upgrade_v1_layers(upgraded, document)
    _upgrade_data_transformation(upgraded)
    _check_net_input(upgraded, document)
    _upgrade_net_input(upgraded)
    _upgrade_batch_norm(upgraded)
    _upgrade_axis_aliases(upgraded)
    return upgraded


def _where(document, path):
    if document is None:
        return {}
    line, col = document.locate(path)
    return {"file": document.filename, "line": line, "col": col}


def _upgrade_v1_layers(net, document):
    if net.layer:
        raise CompileError("the net mixes current `layer` and legacy V1 `layers` fields",
                           hint="write all layers in one form (Caffe refuses the mix too)",
                           **_where(document, ("layers", 0)))
    for index, old in enumerate(net.layers):
        _upgrade_v1_layer(old, net.layer.add(), document, index)
    net.ClearField("layers")


def _upgrade_v1_layer(old, new, document, index):
    if old.HasField("layer"):
        raise CompileError("V0 layer definitions (`layers { layer { ... } }`) are not supported",
                           hint="upgrade the file once with Caffe's upgrade_net_proto_text tool",
                           **_where(document, ("layers", index, "layer")))
    layer_fields = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    for field, value in old.ListFields():
        if field.name in _V1_SPECIAL:
            continue
        target = layer_fields[field.name]
        if field.is_repeated:
            getattr(new, target.name).extend(value)
        elif field.type == field.TYPE_MESSAGE:
            getattr(new, target.name).CopyFrom(value)
        else:
            setattr(new, target.name, value)
    if old.HasField("type"):
        new.type = V1_LAYER_TYPES[caffe_pb2.V1LayerParameter.LayerType.Name(old.type)]
    for i, name in enumerate(old.param):
        _param(new, i).name = name
    for i, mode in enumerate(old.blob_share_mode):
        # V1's DimCheckMode and ParamSpec's DimCheckMode number STRICT / PERMISSIVE alike.
        _param(new, i).share_mode = mode
    for i, lr in enumerate(old.blobs_lr):
        _param(new, i).lr_mult = lr
    for i, decay in enumerate(old.weight_decay):
        _param(new, i).decay_mult = decay


def _param(layer, index):
    while len(layer.param) <= index:
        layer.param.add()
    return layer.param[index]


def _upgrade_data_transformation(net):
    for layer in net.layer:
        for name in _DATA_PARAMS_WITH_TRANSFORM:
            if not layer.HasField(name):
                continue
            old = getattr(layer, name)
            for field in _TRANSFORM_FIELDS:
                if old.HasField(field) and (name, field) not in _LIVE_FIELDS:
                    setattr(layer.transform_param, field, getattr(old, field))
                    old.ClearField(field)


def _check_net_input(net, document):
    """Net-level inputs must pair up with their shapes as Caffe's Net::Init required before
    upgrade_proto took over (it now indexes past the end instead): one input_shape per input,
    or four input_dim (num, channels, height, width) per input, never both forms."""
    inputs, shapes, dims = len(net.input), len(net.input_shape), len(net.input_dim)

    def error(message, path, hint=None):
        return CompileError(message, hint=hint, **_where(document, path))
    if shapes and dims:
        raise error("the net gives both input_shape and input_dim", ("input_dim", 0),
                    "describe the inputs in one form: input_shape { dim: ... } per input")
    if (shapes or dims) and not inputs:
        form = "input_shape" if shapes else "input_dim"
        raise error(f"{form} without any input name", (form, 0),
                    'name each input blob: input: "data"')
    if shapes and shapes != inputs:
        where = ("input", shapes) if shapes < inputs else ("input_shape", inputs)
        raise error(f"{_plural(inputs, 'input')} but {shapes} input_shape", where,
                    "give exactly one input_shape per input, in the same order")
    if dims and dims != 4 * inputs:
        where = ("input", dims // 4) if dims < 4 * inputs else ("input_dim", 4 * inputs)
        need = "needs" if inputs == 1 else "need"
        raise error(f"{_plural(inputs, 'input')} {need} {4 * inputs} input_dim values "
                    f"(4 each), found {dims}", where,
                    "input_dim lists num, channels, height, width for each input in turn")


def _plural(count, word):
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _upgrade_net_input(net):
    """Net-level `input` + `input_dim` / `input_shape` -> one Input layer placed first."""
    has_shape, has_dim = len(net.input_shape) > 0, len(net.input_dim) > 0
    if net.input and (has_shape or has_dim):
        layer = caffe_pb2.LayerParameter(name="input", type="Input")
        for i, top in enumerate(net.input):
            layer.top.append(top)
            shape = layer.input_param.shape.add()
            if has_shape:
                shape.CopyFrom(net.input_shape[i])
            else:
                shape.dim.extend(net.input_dim[4 * i:4 * i + 4])
        layers = [layer] + list(net.layer)
        net.ClearField("layer")
        net.layer.extend(layers)
        net.ClearField("input")
        net.ClearField("input_shape")
        net.ClearField("input_dim")


def _upgrade_batch_norm(net):
    # Old BatchNorm definitions declared three frozen params; Caffe now freezes them itself.
    for layer in net.layer:
        if layer.type == "BatchNorm" and len(layer.param) == 3:
            for spec in layer.param:
                spec.lr_mult = 0
                spec.decay_mult = 0


def _upgrade_axis_aliases(net):
    for layer in net.layer:
        if layer.HasField("concat_param") and layer.concat_param.HasField("concat_dim"):
            if not layer.concat_param.HasField("axis"):
                layer.concat_param.axis = layer.concat_param.concat_dim
            layer.concat_param.ClearField("concat_dim")
        if layer.HasField("slice_param") and layer.slice_param.HasField("slice_dim"):
            if not layer.slice_param.HasField("axis"):
                layer.slice_param.axis = layer.slice_param.slice_dim
            layer.slice_param.ClearField("slice_dim")


def upgrade_solver(solver):
    upgraded = caffe_pb2.SolverParameter()
    upgraded.CopyFrom(solver)
    if upgraded.HasField("solver_type"):
        name = caffe_pb2.SolverParameter.SolverType.Name(upgraded.solver_type)
        upgraded.type = SOLVER_TYPES[name]
        upgraded.ClearField("solver_type")
    return upgraded
