"""Every registered layer unit resumes exactly: whatever state a unit carries from one forward
call to the next (data positions, random generators, recurrent h / c, rows written) must come
back through resume_state() / restore_state() and the resume-state file.

For each registered type, a small net with that layer runs two forward passes, its run state
goes through the real snapshot path (weights via .caffemodel, state via runtime.run_state),
and a third forward pass is compared with the same pass of a fresh net restored from that
snapshot. A unit that keeps state anywhere else fails here; a newly registered type fails
until it has a sample below.
"""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from runtime import run_state
from runtime.layers.registry import registered_types
from runtime.net import Net
from runtime.solver import net_run_state, restore_net_run_state

# Blobs every sample net's Input layer offers: name -> (shape, kind).
INPUTS = {
    "x": ((2, 3, 4, 4), "positive"), "y": ((2, 3, 4, 4), "positive"),
    "v": ((2, 3), "positive"), "w": ((2, 3), "positive"),
    "label": ((2,), 3), "binary": ((2,), 2), "ids": ((2, 3), 5),
    "seq": ((3, 2, 4), "positive"), "cont": ((3, 2), "ones"),
    "c0": ((1, 2, 4), "positive"), "gates": ((1, 2, 16), "positive"), "cont1": ((1, 2), "ones"),
    "H": ((3, 3), "positive"),
}

GAUSSIAN = 'weight_filler { type: "gaussian" std: 0.5 }'
RECURRENT = f'recurrent_param {{ num_output: 4 {GAUSSIAN} }}'

# type -> the layer's body (everything but name and type); {tmp} is a scratch folder.
SAMPLES = {
    "AbsVal": 'bottom: "x" top: "out"',
    "Accuracy": 'bottom: "v" bottom: "label" top: "out"',
    "ArgMax": 'bottom: "v" top: "out"',
    "BatchReindex": 'bottom: "v" bottom: "binary" top: "out"',
    "BNLL": 'bottom: "x" top: "out"',
    "BatchNorm": 'bottom: "x" top: "out"',
    "Bias": 'bottom: "x" top: "out" bias_param { filler { type: "gaussian" } }',
    "Clip": 'bottom: "x" top: "out" clip_param { min: 0.7 max: 1.2 }',
    "Concat": 'bottom: "x" bottom: "y" top: "out"',
    "ContrastiveLoss": 'bottom: "v" bottom: "w" bottom: "binary" top: "out"',
    "Convolution": f'bottom: "x" top: "out" convolution_param {{ num_output: 2 kernel_size: 3 '
                   f'{GAUSSIAN} }}',
    "Crop": 'bottom: "x" bottom: "y" top: "out" crop_param { axis: 2 }',
    "Data": 'top: "out" top: "out_label" data_param { source: "{tmp}/lmdb" backend: LMDB '
            'batch_size: 2 } transform_param { mirror: true crop_size: 3 }',
    "Deconvolution": f'bottom: "x" top: "out" convolution_param {{ num_output: 2 '
                     f'kernel_size: 2 {GAUSSIAN} }}',
    "Dropout": 'bottom: "x" top: "out"',
    "DummyData": 'top: "out" dummy_data_param { shape { dim: 2 dim: 3 } '
                 'data_filler { type: "gaussian" } }',
    "Filter": 'bottom: "v" bottom: "binary" top: "out"',
    "ELU": 'bottom: "x" top: "out"',
    "Eltwise": 'bottom: "x" bottom: "y" top: "out"',
    "Embed": f'bottom: "ids" top: "out" embed_param {{ input_dim: 5 num_output: 4 {GAUSSIAN} }}',
    "EuclideanLoss": 'bottom: "v" bottom: "w" top: "out"',
    "Exp": 'bottom: "x" top: "out"',
    "Flatten": 'bottom: "x" top: "out"',
    "HDF5Data": 'top: "out" hdf5_data_param { source: "{tmp}/h5_list.txt" batch_size: 2 '
                'shuffle: true }',
    "HDF5Output": 'bottom: "v" bottom: "label" hdf5_output_param { file_name: "{tmp}/out.h5" }',
    "HingeLoss": 'bottom: "v" bottom: "label" top: "out"',
    "ImageData": 'top: "out" top: "out_label" image_data_param { source: "{tmp}/images.txt" '
                 'root_folder: "{tmp}/" batch_size: 2 shuffle: true } '
                 'transform_param { mirror: true crop_size: 3 }',
    "Im2col": 'bottom: "x" top: "out" convolution_param { kernel_size: 2 stride: 2 }',
    "InfogainLoss": 'bottom: "v" bottom: "label" bottom: "H" top: "out"',
    "InnerProduct": f'bottom: "v" top: "out" inner_product_param {{ num_output: 2 {GAUSSIAN} }}',
    "Input": None,      # every sample net starts with one
    "LRN": 'bottom: "x" top: "out"',
    "LSTM": f'bottom: "seq" bottom: "cont" top: "out" {RECURRENT}',
    "LSTMUnit": 'bottom: "c0" bottom: "gates" bottom: "cont1" top: "out" top: "out_h"',
    "Log": 'bottom: "x" top: "out"',
    "MVN": 'bottom: "x" top: "out"',
    "MemoryData": 'top: "out" top: "out_label" memory_data_param { batch_size: 2 channels: 1 '
                  'height: 2 width: 2 }',
    "MultinomialLogisticLoss": 'bottom: "v" bottom: "label" top: "out"',
    "PReLU": 'bottom: "x" top: "out" prelu_param { filler { type: "gaussian" } }',
    "Parameter": 'top: "out" parameter_param { shape { dim: 2 dim: 3 } }',
    "Pooling": 'bottom: "x" top: "out" pooling_param { pool: MAX kernel_size: 2 }',
    "Power": 'bottom: "x" top: "out" power_param { power: 2 scale: 0.5 shift: 0.1 }',
    "Python": 'bottom: "v" top: "out" python_param { module: "stateful_user_layer" '
              'layer: "RunningSum" }',
    "RNN": f'bottom: "seq" bottom: "cont" top: "out" {RECURRENT}',
    "ReLU": 'bottom: "x" top: "out"',
    "Reduction": 'bottom: "x" top: "out"',
    "Reshape": 'bottom: "x" top: "out" reshape_param { shape { dim: 0 dim: -1 } }',
    "Scale": 'bottom: "x" top: "out" scale_param { filler { type: "gaussian" } bias_term: true }',
    "Sigmoid": 'bottom: "x" top: "out"',
    "SPP": 'bottom: "x" top: "out" spp_param { pyramid_height: 2 pool: STOCHASTIC }',
    "SigmoidCrossEntropyLoss": 'bottom: "v" bottom: "w" top: "out"',
    "Silence": 'bottom: "x"',
    "Slice": 'bottom: "x" top: "out" top: "out2" slice_param { axis: 1 slice_point: 1 }',
    "Softmax": 'bottom: "v" top: "out"',
    "SoftmaxWithLoss": 'bottom: "v" bottom: "label" top: "out"',
    "Split": 'bottom: "x" top: "out" top: "out2"',
    "Swish": 'bottom: "x" top: "out"',
    "TanH": 'bottom: "x" top: "out"',
    "Threshold": 'bottom: "x" top: "out" threshold_param { threshold: 1 }',
    "Tile": 'bottom: "x" top: "out" tile_param { axis: 1 tiles: 2 }',
    "VideoData": 'top: "out" top: "out_label" top: "out_markers" transform_param { crop_size: 3 '
                 'mirror: true } video_data_param { source: "{tmp}/videos.txt" clip_length: 2 '
                 'clips_per_batch: 2 }',
    "WindowData": 'top: "out" top: "out_label" transform_param { crop_size: 3 mirror: true } '
                  'window_data_param { source: "{tmp}/windows.txt" root_folder: "{tmp}/" '
                  'batch_size: 2 context_pad: 1 }',
}

STATEFUL_USER_LAYER = '''
import caffe
import numpy as np


class RunningSum(caffe.Layer):
    """Adds up everything it has seen: its output depends on every earlier forward call."""

    def setup(self, bottom, top):
        self.total = np.zeros(bottom[0].data.shape, np.float32)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        self.total += bottom[0].data
        top[0].data[...] = self.total

    def backward(self, top, propagate_down, bottom):
        pass

    def resume_state(self):
        return {"total": self.total.copy()}

    def restore_state(self, state):
        self.total = np.array(state["total"], np.float32)
'''


def input_layer():
    shapes = " ".join("shape { " + " ".join(f"dim: {d}" for d in shape) + " }"
                      for shape, _ in INPUTS.values())
    tops = " ".join(f'top: "{name}"' for name in INPUTS)
    return f'layer {{ name: "in" type: "Input" {tops} input_param {{ {shapes} }} }}\n'


def feed(seed):
    generator = torch.Generator().manual_seed(seed)
    values = {}
    for name, (shape, kind) in INPUTS.items():
        if kind == "positive":
            values[name] = 0.5 + torch.rand(shape, generator=generator)
        elif kind == "ones":
            values[name] = torch.ones(shape)
        else:
            values[name] = torch.randint(0, kind, shape, generator=generator).float()
    return values


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """The files the data-layer samples read: HDF5 rows, images (a list, a window file and an
    LMDB), video frames, and the stateful Python layer module."""
    folder = tmp_path_factory.mktemp("sources")
    import h5py
    with h5py.File(folder / "rows.h5", "w") as handle:
        handle["out"] = np.arange(14, dtype=np.float32).reshape(7, 2)
    (folder / "h5_list.txt").write_text(f"{folder / 'rows.h5'}\n")
    rng = np.random.default_rng(0)
    names = []
    for index in range(5):
        name = f"img{index}.png"
        Image.fromarray(rng.integers(0, 255, (5, 6, 3), dtype=np.uint8)).save(folder / name)
        names.append(f"{name} {index % 3}")
    (folder / "images.txt").write_text("\n".join(names) + "\n")
    (folder / "windows.txt").write_text("# 0\nimg0.png\n3 5 6\n2\n1 0.9 0 0 5 4\n"
                                        "0 0.1 1 1 4 3\n# 1\nimg1.png 3 5 6 1\n2 0.8 1 0 5 4\n")
    from runtime.data_tools import convert_imageset_main
    assert convert_imageset_main([f"{folder}/", str(folder / "images.txt"),
                                  str(folder / "lmdb")]) == 0
    from lrcn_apps.activity.lists import VideoListEntry, frame_file_name, write_video_list
    entries = []
    for video in range(3):
        name = f"v_video{video}"
        (folder / "frames" / name).mkdir(parents=True)
        for frame in range(4):
            buffer = io.BytesIO()
            pixels = rng.integers(0, 255, (5, 6, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(buffer, format="PNG")
            (folder / "frames" / name / frame_file_name(name, frame)).write_bytes(
                buffer.getvalue())
        entries.append(VideoListEntry(f"frames/{name}", video % 2, 4))
    write_video_list(folder / "videos.txt", entries)
    (folder / "stateful_user_layer.py").write_text(STATEFUL_USER_LAYER)
    return folder


def build(type_name, folder):
    body = SAMPLES[type_name]
    text = input_layer()
    if body is not None:
        text += f'layer {{ name: "sample" type: "{type_name}" ' \
                f'{body.replace("{tmp}", str(folder))} }}\n'
    # A Python layer with bottoms states its top shapes (the compiler cannot know them).
    shapes = {"out": INPUTS["v"][0]} if type_name == "Python" else {}
    net = Net(compiler_document(text), phase="TRAIN", seed=5, input_shapes=shapes)
    if type_name == "MemoryData":
        data = np.arange(24, dtype=np.float32).reshape(6, 1, 2, 2)
        net.layer("sample").set_input_arrays(data, np.arange(6, dtype=np.float32))
    return net


def compiler_document(text):
    import compiler
    return compiler.load_text(text, "net", "<sample>")


def outputs_and_files(net, inputs, folder):
    """The pass's outputs plus the bytes of anything the net writes (HDF5Output)."""
    values = {name: value.detach().clone() for name, value in net(**inputs).items()}
    written = folder / "out.h5"
    if written.exists():
        import h5py
        with h5py.File(written, "r") as handle:
            values.update({f"file:{key}": torch.from_numpy(handle[key][...]) for key in handle})
    return values


def test_every_registered_unit_has_a_sample():
    missing = sorted(set(registered_types()) - set(SAMPLES))
    assert not missing, (f"no resume sample for {missing}: add one to SAMPLES, and give the "
                         "unit resume_state() / restore_state() if it keeps state")


@pytest.mark.parametrize("type_name", sorted(SAMPLES))
def test_unit_resumes_exactly(type_name, sources, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(sources))
    monkeypatch.chdir(tmp_path)
    (sources / "out.h5").unlink(missing_ok=True)
    original = build(type_name, sources)
    original(**feed(1))
    original(**feed(2))
    original.save(str(tmp_path / "weights.caffemodel"))
    state = run_state.decode(run_state.encode(net_run_state(original)), "<state>")
    expected = outputs_and_files(original, feed(3), sources)

    resumed = build(type_name, sources)
    resumed.copy_from(str(tmp_path / "weights.caffemodel"))
    restore_net_run_state(resumed, state)
    got = outputs_and_files(resumed, feed(3), sources)
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0, equal_nan=True,
                                   msg=f"{type_name}: {name} differs after a resume")


def test_global_random_streams_resume(tmp_path):
    """Python layers often draw from numpy's or Python's global generator: snapshots keep
    them, with torch's."""
    import random

    from runtime.solver import Solver
    from support import tiny_solver
    solver = Solver(str(tiny_solver(tmp_path)), log=lambda line: None)
    solver.step(2)
    np.random.seed(5), random.seed(5), torch.manual_seed(5)
    _, state = solver.snapshot()
    expected = (np.random.rand(), random.random(), torch.rand(1))
    np.random.seed(7), random.seed(7), torch.manual_seed(7)
    Solver(str(tiny_solver(tmp_path)), log=lambda line: None).restore(state)
    assert (np.random.rand(), random.random(), torch.rand(1)) == expected
