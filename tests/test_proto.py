"""The lrcn_proto schema: BVLC numbers and defaults, corpus parsing, binary round trip."""

from pathlib import Path

import pytest
from google.protobuf import text_format

from lrcn_proto import caffe_pb2

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
FORK_FILES = {
    "lrcn_activity/train_test_singleFrame_RGB.prototxt",
    "lrcn_activity/train_test_singleFrame_flow.prototxt",
}


def field(message, name):
    return getattr(caffe_pb2, message).DESCRIPTOR.fields_by_name[name]


# --------------------------------------------------------------------------
# (a) numbers, labels and defaults spot-checked against BVLC caffe.proto

BVLC_NUMBERS = [
    ("LayerParameter", "recurrent_param", 146),
    ("LayerParameter", "embed_param", 137),
    ("LayerParameter", "convolution_param", 106),
    ("LayerParameter", "transform_param", 100),
    ("LayerParameter", "propagate_down", 11),
    ("LayerParameter", "clip_param", 148),
    ("LayerParameter", "swish_param", 147),
    ("NetParameter", "layer", 100),
    ("NetParameter", "layers", 2),
    ("SolverParameter", "type", 40),
    ("SolverParameter", "clip_gradients", 35),
    ("SolverParameter", "iter_size", 36),
    ("SolverParameter", "weights", 42),
    ("BlobProto", "shape", 7),
    ("BlobProto", "data", 5),
    ("BlobProto", "double_diff", 9),
    ("V1LayerParameter", "blobs_lr", 7),
    ("V1LayerParameter", "param", 1001),
    ("V1LayerParameter", "layer", 1),
    ("V0LayerParameter", "hdf5_output_param", 1001),
    ("PoolingParameter", "round_mode", 13),
    ("ConvolutionParameter", "dilation", 18),
]


@pytest.mark.parametrize("message, name, number", BVLC_NUMBERS)
def test_bvlc_field_numbers(message, name, number):
    assert field(message, name).number == number


BVLC_DEFAULTS = [
    ("SolverParameter", "clip_gradients", -1.0),
    ("SolverParameter", "type", "SGD"),
    ("SolverParameter", "regularization_type", "L2"),
    ("SolverParameter", "random_seed", -1),
    ("SolverParameter", "snapshot_format", caffe_pb2.SolverParameter.BINARYPROTO),
    ("SolverParameter", "solver_mode", caffe_pb2.SolverParameter.GPU),
    ("PoolingParameter", "round_mode", caffe_pb2.PoolingParameter.CEIL),
    ("PoolingParameter", "stride", 1),
    ("LRNParameter", "local_size", 5),
    ("LRNParameter", "alpha", 1.0),
    ("LRNParameter", "beta", 0.75),
    ("LRNParameter", "k", 1.0),
    ("FillerParameter", "type", "constant"),
    ("FillerParameter", "std", 1.0),
    ("FillerParameter", "sparse", -1),
    ("NetState", "phase", caffe_pb2.TEST),
    ("LossParameter", "normalization", caffe_pb2.LossParameter.VALID),
    ("ImageDataParameter", "batch_size", 1),
    ("DataParameter", "prefetch", 4),
    ("ParamSpec", "lr_mult", 1.0),
    ("EltwiseParameter", "operation", caffe_pb2.EltwiseParameter.SUM),
    ("EltwiseParameter", "stable_prod_grad", True),
]


@pytest.mark.parametrize("message, name, default", BVLC_DEFAULTS)
def test_bvlc_defaults(message, name, default):
    assert field(message, name).default_value == pytest.approx(default)
    # An unset field reads as its default on a fresh message.
    assert getattr(getattr(caffe_pb2, message)(), name) == pytest.approx(default)


def test_packed_and_required_labels():
    for message, name in [("BlobShape", "dim"), ("BlobProto", "data"), ("BlobProto", "diff"),
                          ("BlobProto", "double_data"), ("BlobProto", "double_diff")]:
        assert field(message, name).is_packed, (message, name)
    # Datum.float_data is not packed in BVLC.
    assert not field("Datum", "float_data").is_packed
    assert field("ClipParameter", "min").is_required
    assert field("ClipParameter", "max").is_required
    assert field("LayerParameter", "blobs").is_repeated
    assert not field("LayerParameter", "name").is_repeated


def test_package_and_file_name_do_not_clash_with_pycaffe():
    assert caffe_pb2.DESCRIPTOR.package == "lrcn_caffe"
    assert caffe_pb2.DESCRIPTOR.name == "lrcn_proto/caffe.proto"
    assert caffe_pb2.NetParameter.DESCRIPTOR.full_name == "lrcn_caffe.NetParameter"


# Fork fields keep the fork's number where BVLC leaves it free; flow's fork number (6) is BVLC's
# force_color, so it lives on 100.
FORK_FIELDS = [
    ("TransformationParameter", "flow", 100, False),
    ("ImageDataParameter", "min_height", 13, 0),
    ("ImageDataParameter", "min_width", 14, 0),
    ("EltwiseParameter", "coeff_blob", 4, False),
]


@pytest.mark.parametrize("message, name, number, default", FORK_FIELDS)
def test_fork_fields_numbers_and_defaults(message, name, number, default):
    descriptor = field(message, name)
    assert descriptor.number == number
    assert descriptor.default_value == default
    numbers = [f.number for f in descriptor.containing_type.fields]
    assert numbers.count(number) == 1


# --------------------------------------------------------------------------
# (b) every corpus file parses in text format

def corpus_files():
    if not CORPUS.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason="no corpus at %s" % CORPUS))]
    return [pytest.param(path, id=path.relative_to(CORPUS).as_posix())
            for path in sorted(CORPUS.rglob("*.prototxt"))]


@pytest.mark.parametrize("path", corpus_files())
def test_corpus_parses(path):
    message = caffe_pb2.SolverParameter() if "solver" in path.name else caffe_pb2.NetParameter()
    text_format.Parse(path.read_text(), message)
    assert message.ListFields(), "parsed to an empty message"
    if path.relative_to(CORPUS).as_posix() in FORK_FILES:
        flow = "flow" in path.name
        data_layers = [layer for layer in message.layer if layer.type == "ImageData"]
        assert data_layers
        for layer in data_layers:
            assert layer.transform_param.HasField("flow")
            assert layer.transform_param.flow == flow


# --------------------------------------------------------------------------
# (c) binary round trip, and the exact bytes Caffe writes for packed fields

def test_netparameter_binary_round_trip():
    net = caffe_pb2.NetParameter(name="roundtrip")
    layer = net.layer.add(name="ip", type="InnerProduct", bottom=["data"], top=["ip"])
    layer.inner_product_param.num_output = 2
    blob = layer.blobs.add()
    blob.shape.dim.extend([2, 3])
    blob.data.extend([0.5, -1.0, 2.0, 0.0, 1.5, -2.5])
    layer.blobs.add(num=1, channels=1, height=1, width=2, data=[0.25, -0.25])
    wire = net.SerializeToString()

    back = caffe_pb2.NetParameter.FromString(wire)
    assert back == net
    assert list(back.layer[0].blobs[0].shape.dim) == [2, 3]
    assert list(back.layer[0].blobs[0].data) == [0.5, -1.0, 2.0, 0.0, 1.5, -2.5]
    assert back.layer[0].blobs[1].width == 2
    assert back.SerializeToString() == wire


def test_packed_wire_bytes():
    # Field 1, wire type 2 (length-delimited), 2 bytes: varints 2 and 3.
    assert caffe_pb2.BlobShape(dim=[2, 3]).SerializeToString() == b"\x0a\x02\x02\x03"
    # Field 5 packed float: tag 0x2a, length 4, little-endian 1.0f.
    assert caffe_pb2.BlobProto(data=[1.0]).SerializeToString() == b"\x2a\x04\x00\x00\x80\x3f"
    # A parser must also accept the unpacked encoding (field 1, varint).
    assert list(caffe_pb2.BlobShape.FromString(b"\x08\x02\x08\x03").dim) == [2, 3]


# --------------------------------------------------------------------------
# (d) this project's own VideoData layer (lrcn_apps/activity/video_layer.py)

def test_video_data_param_is_the_projects_own_field():
    descriptor = field("LayerParameter", "video_data_param")
    assert descriptor.number == 1000
    assert descriptor.message_type.full_name == "lrcn_caffe.VideoDataParameter"
    numbers = [f.number for f in descriptor.containing_type.fields]
    assert numbers.count(1000) == 1
    defaults = caffe_pb2.VideoDataParameter()
    assert (defaults.clip_length, defaults.clips_per_batch, defaults.test_stride) == (16, 1, 8)
    assert defaults.shuffle is True and defaults.is_flow is False
    assert (defaults.new_height, defaults.new_width, defaults.root_folder) == (0, 0, "")
    layer = text_format.Parse(
        'name: "data" type: "VideoData" top: "data" '
        'video_data_param { source: "list.txt" clip_length: 4 clips_per_batch: 3 is_flow: true }',
        caffe_pb2.LayerParameter())
    back = caffe_pb2.LayerParameter.FromString(layer.SerializeToString())
    assert back.video_data_param.clip_length == 4
    assert back.video_data_param.clips_per_batch == 3
    assert back.video_data_param.is_flow
