"""caffe.NetSpec, caffe.layers and caffe.params: writing nets in Python, as pycaffe does.

`layers.Convolution(bottom, kernel_size=5, num_output=20, weight_filler=dict(type="xavier"))`
is a Top; keyword arguments go into the layer's own parameter message (convolution_param here)
when that message has the field, else into the LayerParameter (`name`, `loss_weight`,
`include=dict(phase=TRAIN)`, `param=[dict(lr_mult=1), ...]`, any `*_param=dict(...)`).
`ntop=n` gives n tops, `in_place=True` writes the top over the first bottom. Assigning Tops to
a NetSpec's attributes names them; `to_proto()` returns the NetParameter (layers in dependency
order, unnamed blobs and layers named <Type><n>). Lists become repeated fields, dicts
sub-messages, and a single value given for a repeated field is a list of one.
"""

import collections

from lrcn_proto import caffe_pb2


def _param_field_names():
    """Layer type -> its `*_param` field: the parameter message's name without `Parameter`
    (ConvolutionParameter -> convolution_param)."""
    names = {}
    for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        if field.name.endswith("_param") and field.message_type is not None:
            type_name = field.message_type.name
            if type_name.endswith("Parameter"):
                names[type_name[:-len("Parameter")]] = field.name
    return names


_PARAM_FIELDS = _param_field_names()


def assign_proto(proto, name, value):
    """Set field `name` of message `proto` from a Python value (recursively for dicts and
    lists of dicts)."""
    try:
        field = getattr(proto, name)
    except AttributeError:
        raise AttributeError(f"{type(proto).__name__} has no field '{name}'") from None
    repeated = hasattr(field, "extend")
    if repeated and not isinstance(value, (list, tuple)):
        value = [value]
    if isinstance(value, (list, tuple)):
        if value and isinstance(value[0], dict):
            for item in value:
                message = field.add()
                for key, sub_value in item.items():
                    assign_proto(message, key, sub_value)
        else:
            field.extend(value)
    elif isinstance(value, dict):
        for key, sub_value in value.items():
            assign_proto(field, key, sub_value)
    else:
        setattr(proto, name, value)


class Top:
    """One output blob of a layer function (`fn`), the n-th of its tops."""

    def __init__(self, fn, n):
        self.fn = fn
        self.n = n

    def to_proto(self):
        """A NetParameter with every layer needed to compute this top."""
        return to_proto(self)

    def _to_proto(self, layers, names, autonames):
        return self.fn._to_proto(layers, names, autonames)


class Function:
    """A layer: its type, its bottoms (Tops) and its keyword parameters."""

    def __init__(self, type_name, inputs, params):
        self.type_name = type_name
        for index, bottom in enumerate(inputs):
            if not isinstance(bottom, Top):
                raise TypeError(f"layers.{type_name}: input {index} is not a Top (it is a "
                                f"{type(bottom).__name__})")
        self.inputs = inputs
        self.params = dict(params)
        self.ntop = self.params.pop("ntop", 1)
        self.in_place = self.params.pop("in_place", False)
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _get_name(self, names, autonames):
        if self not in names and self.ntop > 0:
            names[self] = self._get_top_name(self.tops[0], names, autonames)
        elif self not in names:
            autonames[self.type_name] += 1
            names[self] = self.type_name + str(autonames[self.type_name])
        return names[self]

    @staticmethod
    def _get_top_name(top, names, autonames):
        if top not in names:
            autonames[top.fn.type_name] += 1
            names[top] = top.fn.type_name + str(autonames[top.fn.type_name])
        return names[top]

    def _to_proto(self, layers, names, autonames):
        if self in layers:
            return
        bottom_names = []
        for bottom in self.inputs:
            bottom._to_proto(layers, names, autonames)
            bottom_names.append(layers[bottom.fn].top[bottom.n])
        layer = caffe_pb2.LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(bottom_names)
        if self.in_place:
            layer.top.extend(layer.bottom)
        else:
            for top in self.tops:
                layer.top.append(self._get_top_name(top, names, autonames))
        layer.name = self._get_name(names, autonames)
        for key, value in self.params.items():
            self._assign(layer, key, value)
        layers[self] = layer

    def _assign(self, layer, key, value):
        own = _PARAM_FIELDS.get(self.type_name)
        if not key.endswith("param") and own is not None and \
                key in getattr(layer, own).DESCRIPTOR.fields_by_name:
            assign_proto(getattr(layer, own), key, value)
            return
        if key not in layer.DESCRIPTOR.fields_by_name:
            where = f"{own} nor LayerParameter" if own else "LayerParameter"
            hint = "" if own else (f" ({self.type_name} has no parameter message of its own: "
                                   "pass its parameters as <name>_param=dict(...))")
            raise AttributeError(f"layers.{self.type_name}({key}=...): neither {where} has a "
                                 f"field '{key}'{hint}")
        assign_proto(layer, key, value)


class NetSpec:
    """Tops assigned as attributes (or items) are named by them; to_proto() generates every
    layer needed to compute them."""

    def __init__(self):
        super().__setattr__("tops", collections.OrderedDict())

    def __setattr__(self, name, value):
        self.tops[name] = value

    def __getattr__(self, name):
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError(f"NetSpec has no top named '{name}'") from None

    def __setitem__(self, key, value):
        self.__setattr__(key, value)

    def __getitem__(self, item):
        return self.__getattr__(item)

    def __delitem__(self, name):
        del self.tops[name]

    def keys(self):
        return list(self.tops)

    def to_proto(self):
        names = {top: name for name, top in self.tops.items()}
        autonames = collections.Counter()
        layers = collections.OrderedDict()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers.values())
        return net


def to_proto(*tops):
    """A NetParameter with every layer needed to compute the given tops (names generated)."""
    layers = collections.OrderedDict()
    autonames = collections.Counter()
    for top in tops:
        top.fn._to_proto(layers, {}, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


class Layers:
    """`layers.<Type>(*bottoms, **params)`: one Top, a tuple of Tops (ntop > 1), or the layer
    function itself (ntop=0)."""

    def __getattr__(self, type_name):
        if type_name.startswith("__"):
            raise AttributeError(type_name)

        def layer_fn(*args, **kwargs):
            fn = Function(type_name, args, kwargs)
            if fn.ntop == 0:
                return fn
            if fn.ntop == 1:
                return fn.tops[0]
            return fn.tops
        return layer_fn


class Parameters:
    """`params.<Type>.<CONSTANT>`: the enum values of <Type>Parameter, e.g. params.Pooling.MAX."""

    def __getattr__(self, type_name):
        if type_name.startswith("__"):
            raise AttributeError(type_name)
        message = getattr(caffe_pb2, type_name + "Parameter", None)
        if message is None:
            raise AttributeError(f"caffe.params.{type_name}: no message {type_name}Parameter")

        class Param:
            def __getattr__(self, name):
                try:
                    return getattr(message, name)
                except AttributeError:
                    raise AttributeError(f"caffe.params.{type_name}.{name}: "
                                         f"{type_name}Parameter has no constant '{name}'") \
                        from None
        return Param()


layers = Layers()
params = Parameters()
