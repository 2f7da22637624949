"""Declarations of the data layers: their tops come from the files they read.

Each rule reads as little as it can (the first HDF5 file's dataset shapes, the first image's
header, the first LMDB record). When a file a layer names is absent, the top shapes are None
(unknown) rather than an error, so nets whose data lives on another machine can still be shown
and checked; CompiledNet's `input_shapes` can supply them. A file that exists but is damaged, or
settings Caffe would refuse, are CompileErrors.
"""

from lrcn_proto import caffe_pb2

from . import data_sources as sources
from .errors import CompileError
from .layer_types import DATA, SINK, BlobCounts, declare, fixed
from .shapes import LayerShapes


# --- checks shared by the rules (and by runtime.transform) --------------------------------

def check_positive(value, what, layer):
    if value <= 0:
        raise CompileError(f"{layer.type} layer '{layer.name}': {what} must be positive, "
                           f"got {value}")


def check_transform(transform, channels=None):
    """Caffe's DataTransformer constructor / Transform checks that do not need the pixels."""
    if transform.HasField("mean_file") and len(transform.mean_value):
        raise CompileError("cannot specify mean_file and mean_value at the same time",
                           hint="keep one of them (Caffe refuses both)")
    if transform.force_color and transform.force_gray:
        raise CompileError("cannot set both force_color and force_gray")
    if channels is not None and len(transform.mean_value) not in (0, 1, channels):
        raise CompileError(f"{len(transform.mean_value)} mean_value entries for {channels} "
                           "channels", hint="specify either 1 mean_value or as many as channels")


def _required_source(source, layer, field):
    if not source:
        raise CompileError(f"{layer.type} layer '{layer.name}' needs {field}")
    return source


def _transformed_shape(layer, channels, height, width, context):
    """(C, H, W) after the layer's transform_param crop, with Caffe's checks of crop and mean."""
    transform = layer.transform_param
    check_transform(transform, channels)
    crop = transform.crop_size
    if crop and (height < crop or width < crop):
        raise CompileError(f"crop_size {crop} is larger than the {height} x {width} input of "
                           f"{layer.type} layer '{layer.name}'",
                           hint="resize the images (new_height / new_width) or reduce crop_size")
    if transform.HasField("mean_file"):
        _check_mean_file(transform.mean_file, (channels, height, width), context)
    return (channels, crop, crop) if crop else (channels, height, width)


def _check_mean_file(mean_file, input_shape, context):
    # A missing mean file does not change any shape; the runtime reports it when it loads it.
    try:
        path = sources.resolve_source(mean_file, context.net_file, "mean file", context.location)
        shape = sources.mean_image_shape(path)
    except sources.MissingSource:
        return
    if tuple(shape) != tuple(input_shape):
        raise CompileError(f"mean file {mean_file} is {' x '.join(map(str, shape))} but the "
                           f"images are {' x '.join(map(str, input_shape))} (before cropping)",
                           hint="Caffe subtracts the mean pixel by pixel, so the sizes must "
                                "match; or use mean_value")


def _unknown(layer):
    return LayerShapes([None] * len(layer.top))


def _with_label(layer, batch, data_shape):
    # BasePrefetchingDataLayer: a second top, when present, is the label, shaped (batch,).
    return LayerShapes([(batch,) + tuple(data_shape), (batch,)][:len(layer.top)])


# --- rules ---------------------------------------------------------------------------------

def check_hdf5_data(layer):
    """HDF5DataLayer::LayerSetUp's checks of the settings (no file read)."""
    if layer.HasField("transform_param"):
        raise CompileError(f"HDF5Data layer '{layer.name}' does not transform data",
                           hint="remove transform_param (Caffe refuses it: HDF5 data is stored "
                                "ready to use)")
    check_positive(layer.hdf5_data_param.batch_size, "hdf5_data_param.batch_size", layer)
    return _required_source(layer.hdf5_data_param.source, layer, "hdf5_data_param.source")


@declare("HDF5Data", counts=BlobCounts(0, 0, 1, None), traits={DATA})
def hdf5_data_shapes(layer, bottom_shapes, context):
    source = check_hdf5_data(layer)
    param = layer.hdf5_data_param
    try:
        list_file = sources.resolve_source(source, context.net_file, "HDF5 list file",
                                           context.location)
        first = sources.read_hdf5_list(list_file)[0]
        shapes = sources.hdf5_dataset_shapes(first.path, list(layer.top), list_file, first.line)
    except sources.MissingSource:
        return _unknown(layer)
    return LayerShapes([(param.batch_size,) + shapes[top][1:] for top in layer.top])


@declare("HDF5Output", counts=fixed(2, 0), traits={SINK})
def hdf5_output_shapes(layer, bottom_shapes, context):
    _required_source(layer.hdf5_output_param.file_name, layer, "hdf5_output_param.file_name")
    return LayerShapes([])


def check_image_data(layer):
    """ImageDataLayer::DataLayerSetUp's checks of the settings (no file read)."""
    param = layer.image_data_param
    check_positive(param.batch_size, "image_data_param.batch_size", layer)
    if (param.new_height > 0) != (param.new_width > 0):
        raise CompileError("new_height and new_width must be set at the same time",
                           hint="set both to warp every image, or neither")
    if (param.min_height > 0) != (param.min_width > 0):
        raise CompileError("min_height and min_width must be set at the same time")
    check_transform(layer.transform_param)
    return _required_source(param.source, layer, "image_data_param.source")


@declare("ImageData", counts=fixed(0, 2), traits={DATA})
def image_data_shapes(layer, bottom_shapes, context):
    check_image_data(layer)
    param = layer.image_data_param
    channels = sources.image_channels(param.is_color)
    size = image_size(layer, context)
    if size is None:
        return _unknown(layer)
    return _with_label(layer, param.batch_size,
                       _transformed_shape(layer, channels, *size, context))


def image_size(layer, context):
    """(height, width) of ImageData's images before cropping: new_height x new_width when set,
    else the first listed image's size (after the fork's min_height / min_width), or None when
    the list or the image is absent."""
    param = layer.image_data_param
    source = check_image_data(layer)
    if param.new_height > 0:
        return param.new_height, param.new_width
    try:
        list_file = sources.resolve_source(source, context.net_file, "image list file",
                                           context.location)
        first = sources.read_image_list(list_file)[0]
        path = sources.listed_image_path(param.root_folder, first.name, context.net_file,
                                         list_file, first.line)
        header = sources.image_header(path, (list_file, first.line))
    except sources.MissingSource:
        return None
    return sources.fork_min_size(header.height, header.width, param.min_height,
                                 param.min_width)


def check_data(layer):
    """DataLayer's checks of the settings (no database read)."""
    check_positive(layer.data_param.batch_size, "data_param.batch_size", layer)
    check_transform(layer.transform_param)
    return _required_source(layer.data_param.source, layer, "data_param.source")


@declare("Data", counts=BlobCounts(0, 0, 1, 2), traits={DATA})
def data_shapes(layer, bottom_shapes, context):
    source = check_data(layer)
    param = layer.data_param
    try:
        path = sources.resolve_source(source, context.net_file, "database", context.location)
        key, value = sources.first_record(path, param.backend)
        where = (path, None)
        datum = sources.parse_datum(value, where, key)
        dims = sources.datum_dims(datum, encoded_color(layer), where, key)
    except sources.MissingSource:
        return _unknown(layer)
    return _with_label(layer, param.batch_size, _transformed_shape(layer, *dims, context))


def encoded_color(layer):
    """How a Data layer decodes encoded Datums: True colour, False gray, None native."""
    transform = layer.transform_param
    if transform.force_color or layer.data_param.force_encoded_color:
        return True
    if transform.force_gray:
        return False
    return None


@declare("DummyData", counts=BlobCounts(0, 0, 1, None), traits={DATA})
def dummy_data_shapes(layer, bottom_shapes, context):
    return LayerShapes(dummy_shapes(layer))


def dummy_shapes(layer):
    """One shape per top, with DummyDataLayer::LayerSetUp's checks."""
    param = layer.dummy_data_param
    tops = len(layer.top)
    if len(param.data_filler) not in (0, 1, tops):
        raise CompileError(f"number of data fillers must be 0, 1 or equal to the number of tops "
                           f"({tops}); you specified {len(param.data_filler)}")
    legacy = ("num", "channels", "height", "width")
    if any(len(getattr(param, name)) for name in legacy):
        if len(param.shape):
            raise CompileError("both shape and legacy num/channels/height/width were specified",
                               hint="use `shape { dim: ... }` alone")
        for name in legacy:
            if len(getattr(param, name)) not in (1, tops):
                raise CompileError(f"must specify '{name}' once, or once per top blob ({tops}); "
                                   f"specified {len(getattr(param, name))}")
        return [tuple(_pick(getattr(param, name), i) for name in legacy) for i in range(tops)]
    if len(param.shape) not in (1, tops):
        raise CompileError(f"must specify 'shape' once, or once per top blob ({tops}); "
                           f"specified {len(param.shape)}")
    return [tuple(int(d) for d in _pick(param.shape, i).dim) for i in range(tops)]


def _pick(values, index):
    return values[0] if len(values) == 1 else values[index]


@declare("MemoryData", counts=fixed(0, 2), traits={DATA})
def memory_data_shapes(layer, bottom_shapes, context):
    param = layer.memory_data_param
    dims = (param.batch_size, param.channels, param.height, param.width)
    if min(dims) <= 0:
        raise CompileError("batch_size, channels, height and width must be specified and "
                           "positive in memory_data_param")
    return LayerShapes([dims, (param.batch_size,)])


@declare("WindowData", counts=fixed(0, 2), traits={DATA})
def window_data_shapes(layer, bottom_shapes, context):
    param = layer.window_data_param
    check_positive(param.batch_size, "window_data_param.batch_size", layer)
    crop = layer.transform_param.crop_size
    if crop <= 0:
        raise CompileError("WindowData needs transform_param.crop_size > 0",
                           hint="every window is warped or cropped to crop_size x crop_size")
    _required_source(param.source, layer, "window_data_param.source (the window file)")
    if crop <= 2 * param.context_pad:
        raise CompileError(f"context_pad ({param.context_pad}) leaves nothing of the "
                           f"{crop} x {crop} crop for the window",
                           hint="context_pad must be below crop_size / 2")
    if not 0 <= param.fg_fraction <= 1:
        raise CompileError(f"fg_fraction must be in [0, 1], got {param.fg_fraction:g}")
    if param.crop_mode not in ("warp", "square"):
        # Caffe takes any other word for "warp"; a misspelt "square" would go unnoticed.
        raise CompileError(f"crop_mode must be \"warp\" or \"square\", got "
                           f"\"{param.crop_mode}\"")
    check_transform(layer.transform_param, 3)
    return LayerShapes([(param.batch_size, 3, crop, crop), (param.batch_size,)])


@declare("Python", counts=None)
def python_shapes(layer, bottom_shapes, context):
    # A Python layer's tops are whatever its reshape() makes them: unknown until it runs.
    # CompiledNet's input_shapes names them where a net needs them statically.
    if not layer.python_param.module or not layer.python_param.layer:
        raise CompileError(f"Python layer '{layer.name}' needs python_param.module and "
                           "python_param.layer")
    return _unknown(layer)


# DataParameter.prefetch's default, for data layers whose message has no such field.
DEFAULT_PREFETCH = caffe_pb2.DataParameter().prefetch
