"""The VideoData layer (lrcn_apps/activity/video_layer.py, video_shapes.py): clip sampling, the
time-major data / label / clip_markers layout, crops and mirrors per clip, determinism and resume,
the shape rule, and the T x N reshape inside the compiled LRCN net.

The frame tree is tiny and lossless: each frame is a PNG (under the .jpg name the list expects;
the decoder goes by content) whose pixels say which video and frame it is and where they sit:
    B = 16 * video + frame,  G = 4 * column + 1,  R = 4 * row + 2.
"""
import io
import os

import numpy as np
import pytest
import torch
from PIL import Image

import compiler
from compiler.errors import CompileError
from lrcn_proto import caffe_pb2
from runtime import prefetch
from lrcn_apps.activity import video_layer, video_shapes  # noqa: F401  (registers VideoData)
from lrcn_apps.activity.lists import VideoListEntry, frame_file_name, write_video_list
from lrcn_apps.activity.video_layer import VideoData

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEIGHT, WIDTH = 8, 10
FRAME_COUNTS = (6, 7, 8)
LABELS = (2, 0, 1)


def frame_pixels(video, frame, height=HEIGHT, width=WIDTH):
    """RGB uint8 (H, W, 3) frame encoding (video, frame, row, column)."""
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = 4 * np.arange(height)[:, None] + 2
    image[..., 1] = 4 * np.arange(width)[None, :] + 1
    image[..., 2] = 16 * video + frame
    return image


@pytest.fixture
def tree(tmp_path):
    """frames/v_<i>/v_<i>.000k.jpg (PNG bytes) for three videos and a list file."""
    entries = []
    for video, (count, label) in enumerate(zip(FRAME_COUNTS, LABELS)):
        name = f"v_video{video}"
        folder = tmp_path / "frames" / name
        folder.mkdir(parents=True)
        for frame in range(count):
            buffer = io.BytesIO()
            Image.fromarray(frame_pixels(video, frame)).save(buffer, format="PNG")
            (folder / frame_file_name(name, frame)).write_bytes(buffer.getvalue())
        entries.append(VideoListEntry(f"frames/{name}", label, count))
    write_video_list(tmp_path / "list.txt", entries)
    return tmp_path


def layer_text(source, clip_length=4, clips_per_batch=3, crop=4, mirror=False, extra="",
               transform_extra="", tops=("data", "label", "clip_markers")):
    top_lines = " ".join(f'top: "{top}"' for top in tops)
    return (f'layer {{ name: "data" type: "VideoData" {top_lines} '
            f'transform_param {{ crop_size: {crop} mirror: {str(mirror).lower()} '
            f'{transform_extra} }} '
            f'video_data_param {{ source: "{source}" clip_length: {clip_length} '
            f'clips_per_batch: {clips_per_batch} {extra} }} }}')


def build(text, phase="TRAIN", seed=7, workers=0):
    compiled = compiler.compile_net(compiler.parse_text(text, "net"), phase)
    with prefetch.options(workers=workers):
        return VideoData(compiled.layers[0], torch.Generator().manual_seed(seed))


def decode_rows(data, scale=1.0, mean=0.0):
    """(rows, 3, h, w) BGR floats -> per row (video, frame), and the (row, col) of pixel 0, 0."""
    pixels = np.rint(np.asarray(data) / scale + mean).astype(np.int64)
    code = pixels[:, 0, 0, 0]                        # B
    return code // 16, code % 16, (pixels[:, 2, 0, 0] - 2) // 4, (pixels[:, 1, 0, 0] - 1) // 4


# --- TEST phase: consecutive clips, hand-computed ------------------------------------------------

def test_test_phase_clips_in_list_order_time_major(tree):
    # T = 4, stride 2: video 0 (6 frames) starts 0, 2; video 1 (7) 0, 2, 3; video 2 (8) 0, 2, 4.
    unit = build(layer_text(tree / "list.txt", extra="test_stride: 2"), phase="TEST")
    expected_clips = [(0, 0), (0, 2), (1, 0), (1, 2), (1, 3), (2, 0), (2, 2), (2, 4), (0, 0)]
    for batch in range(3):
        data, label, markers = (t.numpy() for t in unit())
        assert data.shape == (12, 3, 4, 4) and label.shape == (12,) and markers.shape == (12,)
        videos, frames, rows, cols = decode_rows(data)
        for n in range(3):
            video, start = expected_clips[3 * batch + n]
            for t in range(4):
                row = t * 3 + n                   # time-major: frame t of clip n
                assert (videos[row], frames[row]) == (video, start + t), (batch, n, t)
                assert label[row] == LABELS[video]
        np.testing.assert_array_equal(markers, [0, 0, 0] + [1] * 9)
        # Centre crop of the 8 x 10 frames: rows 2..5, columns 3..6, for every row.
        assert set(rows) == {2} and set(cols) == {3}


def test_test_phase_full_crop_values(tree):
    unit = build(layer_text(tree / "list.txt", clip_length=2, clips_per_batch=1,
                            extra="test_stride: 8"), phase="TEST")
    data = unit()[0].numpy()
    expected = frame_pixels(0, 0)[2:6, 3:7, ::-1].transpose(2, 0, 1)   # RGB -> BGR, CHW
    np.testing.assert_array_equal(data[0], expected)


# --- TRAIN phase: LRCN's random clips ------------------------------------------------------------

def reference_clips(seed, batch, clips_per_batch, order, clip_length, frame_size, crop):
    """The documented draws: per clip start, crop y, crop x, mirror, from batch_rng(seed, 0, k)."""
    rng = prefetch.batch_rng(seed, 0, batch)
    clips = []
    for n in range(clips_per_batch):
        video = order[(batch * clips_per_batch + n) % len(order)]
        count = FRAME_COUNTS[video]
        start = int(rng.integers(0, max(count - clip_length, 0) + 1))
        y = int(rng.integers(0, frame_size[0] - crop + 1))
        x = int(rng.integers(0, frame_size[1] - crop + 1))
        mirror = bool(rng.integers(0, 2))
        clips.append((video, start, y, x, mirror))
    return clips


def test_train_sampling_matches_the_documented_draws(tree):
    unit = build(layer_text(tree / "list.txt", clip_length=4, clips_per_batch=2,
                            extra="shuffle: false"))
    for batch in range(4):
        data, label, markers = (t.numpy() for t in unit())
        videos, frames, rows, cols = decode_rows(data)
        for n, (video, start, y, x, _) in enumerate(
                reference_clips(unit.seed, batch, 2, [0, 1, 2], 4, (HEIGHT, WIDTH), 4)):
            for t in range(4):
                row = t * 2 + n
                assert (videos[row], frames[row]) == (video, start + t)
                assert (rows[row], cols[row]) == (y, x)       # one crop offset per clip
                assert label[row] == LABELS[video]
        np.testing.assert_array_equal(markers, [0, 0] + [1] * 6)


def test_train_shuffle_visits_every_video_once_per_epoch(tree):
    unit = build(layer_text(tree / "list.txt", clip_length=2, clips_per_batch=3))
    for _ in range(4):
        videos = decode_rows(unit()[0].numpy())[0][:3]
        assert sorted(videos.tolist()) == [0, 1, 2]


def test_short_video_repeats_its_last_frame(tree):
    unit = build(layer_text(tree / "list.txt", clip_length=9, clips_per_batch=1,
                            extra="shuffle: false"))
    videos, frames, _, _ = decode_rows(unit()[0].numpy())
    assert videos.tolist() == [0] * 9
    assert frames.tolist() == [0, 1, 2, 3, 4, 5, 5, 5, 5]


def test_mirror_flips_whole_clips_and_mean_scale_apply(tree):
    unit = build(layer_text(tree / "list.txt", clip_length=3, clips_per_batch=3, mirror=True,
                            extra="shuffle: false",
                            transform_extra="mean_value: 1 mean_value: 2 mean_value: 3 "
                                            "scale: 0.5"))
    seen = set()
    for batch in range(6):
        data = unit()[0].numpy()
        plan = reference_clips(unit.seed, batch, 3, [0, 1, 2], 3, (HEIGHT, WIDTH), 4)
        pixels = data.reshape(3, 3, 3, 4, 4) / 0.5 + np.array([1, 2, 3]).reshape(1, 1, 3, 1, 1)
        for n, (video, start, y, x, mirror) in enumerate(plan):
            for t in range(3):
                expected = frame_pixels(video, start + t)[y:y + 4, x:x + 4, ::-1]
                if mirror:
                    expected = expected[:, ::-1]
                np.testing.assert_allclose(pixels[t, n], expected.transpose(2, 0, 1), atol=1e-4)
            seen.add(mirror)
    assert seen == {True, False}


def test_flow_mirroring_negates_x_flow(tree):
    unit = build(layer_text(tree / "list.txt", clip_length=1, clips_per_batch=3, mirror=True,
                            extra="shuffle: false is_flow: true"))
    data = unit()[0].numpy()
    for n, (video, start, y, x, mirror) in enumerate(
            reference_clips(unit.seed, 0, 3, [0, 1, 2], 1, (HEIGHT, WIDTH), 4)):
        expected = frame_pixels(video, start)[y:y + 4, x:x + 4, ::-1].astype(np.float32)
        if mirror:
            expected = expected[:, ::-1].copy()
            expected[..., 2] = np.clip(256 - expected[..., 2], 0, 255)   # BGR: x flow is R
        np.testing.assert_array_equal(data[n], expected.transpose(2, 0, 1))


def test_test_stride_zero_gives_random_clips_with_centre_crops(tree):
    unit = build(layer_text(tree / "list.txt", clip_length=3, clips_per_batch=3,
                            extra="shuffle: false test_stride: 0"), phase="TEST")
    data = unit()[0].numpy()
    videos, frames, rows, cols = decode_rows(data)
    plan = reference_clips(unit.seed, 0, 3, [0, 1, 2], 3, (HEIGHT, WIDTH), 4)
    assert [(videos[n], frames[n]) for n in range(3)] == [(v, s) for v, s, *_ in plan]
    assert set(rows) == {2} and set(cols) == {3}


# --- determinism and resume ----------------------------------------------------------------------

def batches(unit, count):
    return [tuple(t.numpy().copy() for t in unit()) for _ in range(count)]


def test_same_seed_same_batches_any_workers(tree):
    text = layer_text(tree / "list.txt", mirror=True)
    first = batches(build(text, seed=3, workers=0), 5)
    threaded = build(text, seed=3, workers=2)
    second = batches(threaded, 5)
    threaded.close()
    for a, b in zip(first, second):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    other = batches(build(text, seed=4), 5)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, other))


def test_resume_state_continues_the_stream(tree):
    text = layer_text(tree / "list.txt", mirror=True)
    reference = batches(build(text, seed=5), 6)
    unit = build(text, seed=5, workers=1)
    batches(unit, 2)
    state = unit.resume_state()
    assert state["batch"] == 2
    resumed = build(text, seed=5, workers=1)
    resumed.restore_state(state)
    for a, b in zip(reference[2:], batches(resumed, 4)):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    unit.close()
    resumed.close()


# --- the shape rule ------------------------------------------------------------------------------

def test_shape_rule_tops(tree):
    net = compiler.compile_net(compiler.parse_text(
        layer_text(tree / "list.txt", clip_length=5, clips_per_batch=2, crop=0), "net"))
    assert net.layers[0].top_shapes == [(10, 3, HEIGHT, WIDTH), (10,), (10,)]
    net = compiler.compile_net(compiler.parse_text(
        layer_text(tree / "list.txt", clip_length=5, clips_per_batch=2, crop=0,
                   extra="new_height: 12 new_width: 16", tops=("data", "label")), "net"))
    assert net.layers[0].top_shapes == [(10, 3, 12, 16), (10,)]


def test_shape_rule_unknown_without_the_list(tmp_path):
    net = compiler.compile_net(compiler.parse_text(layer_text(tmp_path / "absent.txt"), "net"))
    assert net.layers[0].top_shapes == [None, None, None]


@pytest.mark.parametrize("extra, crop, message", [
    ("new_height: 10", 4, "new_height and new_width"),
    ("", 9, "crop_size 9 is larger"),
    ("clip_length: 0", 4, "clip_length must be positive"),
])
def test_shape_rule_errors(tree, extra, crop, message):
    text = layer_text(tree / "list.txt", crop=crop, extra=extra)
    if "clip_length" in extra:
        text = text.replace("clip_length: 4 ", "")
    with pytest.raises(CompileError, match=message):
        compiler.compile_net(compiler.parse_text(text, "net"))


def test_missing_frame_names_the_video(tree):
    (tree / "list.txt").write_text("frames/v_video0 2 9\n")
    unit = build(layer_text(tree / "list.txt", clip_length=9, clips_per_batch=1,
                            extra="shuffle: false"))
    with pytest.raises(CompileError, match="frame 7 of 9 not found"):
        unit()



def test_frames_are_decoded_once_and_reread_once_edited(tree, monkeypatch):
    decoded = []
    real = video_layer.decode_image
    monkeypatch.setattr(video_layer, "decode_image",
                        lambda path, *a: decoded.append(path) or real(path, *a))
    text = layer_text(tree / "list.txt", clip_length=2, clips_per_batch=1,
                      extra="shuffle: false test_stride: 8")
    unit = build(text, phase="TEST")
    first = batches(unit, 6)                     # two clips per video, none sharing a frame
    assert len(decoded) == 12
    decoded.clear()
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(first, batches(unit, 6)))
    assert decoded == []                         # the second pass decodes nothing
    edited = tree / "frames" / "v_video1" / frame_file_name("v_video1", 0)
    Image.fromarray(frame_pixels(2, 9)).save(edited, format="PNG")
    status = os.stat(edited)
    os.utime(edited, ns=(status.st_atime_ns, status.st_mtime_ns + 10**9))
    batches(unit, 2)                             # video 0's clips
    decoded.clear()
    data, _, _ = unit()                          # video 1's first clip: frames 0 and 1
    assert decoded == [str(edited)]
    videos, frames, _, _ = decode_rows(data)
    assert videos.tolist() == [2, 1] and frames.tolist() == [9, 1]


def test_project_field_parses_in_a_layer():
    layer = compiler.parse_text(layer_text("x.txt", extra="is_flow: true"), "net").layer[0]
    assert isinstance(layer.video_data_param, caffe_pb2.VideoDataParameter)
    assert layer.video_data_param.is_flow


# --- the T x N reshape inside the LRCN net -------------------------------------------------------

LRCN_NET = os.path.join(ROOT, "nets", "lrcn_activity.prototxt")
SINGLE_FRAME_NET = os.path.join(ROOT, "nets", "single_frame.prototxt")


def lrcn_layer(net, name):
    return next(layer for layer in net.layers if layer.name == name)


@pytest.mark.parametrize("stage", ["rgb", "flow"])
def test_lrcn_net_reshapes_frames_to_time_by_clips(stage):
    data_layer = next(layer for layer in compiler.load_file(LRCN_NET).message.layer
                      if layer.type == "VideoData" and layer.include[0].phase == caffe_pb2.TRAIN)
    T = data_layer.video_data_param.clip_length
    N = data_layer.video_data_param.clips_per_batch
    crop = data_layer.transform_param.crop_size
    shapes = {"data": (T * N, 3, crop, crop), "label": (T * N,), "clip_markers": (T * N,)}
    net = compiler.compile_net(LRCN_NET, "TRAIN", (stage,), input_shapes=shapes)
    features = lrcn_layer(net, "fc6").top_shapes[0][1]
    assert lrcn_layer(net, "reshape-data").top_shapes == [(T, N, features)]
    assert lrcn_layer(net, "reshape-label").top_shapes == [(T, N)]
    assert lrcn_layer(net, "reshape-cm").top_shapes == [(T, N)]
    hidden = lrcn_layer(net, "lstm1").top_shapes[0]
    assert hidden[:2] == (T, N)
    assert lrcn_layer(net, "fc8-final").top_shapes == [(T, N, 8)]


def test_deploy_nets_give_per_frame_probabilities():
    from runtime.net import Net
    from lrcn_apps.activity.clips import clip_markers
    for path in (LRCN_NET, SINGLE_FRAME_NET):
        net = Net(path, phase="TEST", stages=("rgb", "deploy"))
        shape = net.compiled.blobs["data"]
        feed = {"data": torch.randn(shape)}
        if "clip_markers" in net.inputs:
            feed["clip_markers"] = torch.from_numpy(clip_markers(16, shape[0] // 16))
        with torch.no_grad():
            probs = net(**feed)["probs"]
        assert probs.shape[-1] == 8
        np.testing.assert_allclose(probs.sum(-1).numpy(), 1.0, atol=1e-5)
        if path == LRCN_NET:
            assert tuple(probs.shape[:2]) == (16, shape[0] // 16)


def test_reshaped_label_column_is_one_clip(tree):
    from runtime.net import Net
    text = layer_text(tree / "list.txt", clip_length=4, clips_per_batch=3) + (
        ' layer { name: "reshape-label" type: "Reshape" bottom: "label" top: "reshape-label" '
        'reshape_param { shape { dim: 4 dim: -1 } } }'
        ' layer { name: "reshape-data" type: "Reshape" bottom: "data" top: "reshape-data" '
        'reshape_param { shape { dim: 4 dim: -1 dim: 48 } } }'
        ' layer { name: "silence" type: "Silence" bottom: "clip_markers" }')
    net = Net(compiler.parse_text(text, "net"), phase="TRAIN", seed=1)
    outputs = net.run()
    labels = outputs["reshape-label"].numpy()
    data = outputs["reshape-data"].numpy()             # (T, N, 3 * 4 * 4), BGR planes
    assert labels.shape == (4, 3) and data.shape == (4, 3, 48)
    videos = np.rint(data[:, :, 0]).astype(int) // 16  # B of pixel (0, 0)
    frames = np.rint(data[:, :, 0]).astype(int) % 16
    for n in range(3):
        # Column n is clip n at every step: one video, consecutive frames, its label.
        assert len(set(videos[:, n])) == 1
        assert np.all(np.diff(frames[:, n]) == 1)
        assert set(labels[:, n]) == {LABELS[videos[0, n]]}


# --- solver snapshots resume the data stream bit for bit ---------------------------------------

def test_solver_resume_is_bit_identical(tree, tmp_path):
    from runtime.solver import Solver
    net = tmp_path / "net.prototxt"
    data = layer_text(tree / "list.txt", clip_length=4, clips_per_batch=3, mirror=True)
    net.write_text(data + '''
layer { name: "fc6" type: "InnerProduct" bottom: "data" top: "fc6"
  inner_product_param { num_output: 5 weight_filler { type: "xavier" } } }
layer { name: "drop6" type: "Dropout" bottom: "fc6" top: "fc6" }
layer { name: "reshape-data" type: "Reshape" bottom: "fc6" top: "fc6-reshape"
  reshape_param { shape { dim: 4 dim: -1 dim: 5 } } }
layer { name: "reshape-label" type: "Reshape" bottom: "label" top: "reshape-label"
  reshape_param { shape { dim: 4 dim: -1 } } }
layer { name: "reshape-cm" type: "Reshape" bottom: "clip_markers" top: "reshape-cm"
  reshape_param { shape { dim: 4 dim: -1 } } }
layer { name: "lstm1" type: "LSTM" bottom: "fc6-reshape" bottom: "reshape-cm" top: "lstm1"
  recurrent_param { num_output: 4 weight_filler { type: "uniform" min: -0.1 max: 0.1 } } }
layer { name: "fc8" type: "InnerProduct" bottom: "lstm1" top: "fc8"
  inner_product_param { num_output: 3 axis: 2 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc8" bottom: "reshape-label" top: "loss"
  softmax_param { axis: 2 } }
''')
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'net: "{net}"\nbase_lr: 0.1\nmomentum: 0.9\nlr_policy: "fixed"\n'
                      f'max_iter: 6\nsnapshot: 3\nsnapshot_prefix: "{tmp_path}/run"\n'
                      'random_seed: 11\nsolver_mode: CPU\ndisplay: 0\n')
    with prefetch.options(workers=1):
        straight = Solver(str(solver), log=lambda line: None)
        straight.solve()
        resumed = Solver(str(solver), log=lambda line: None)
        resumed.solve(str(tmp_path / "run_iter_3.solverstate"))
    for a, b in zip(straight.net.learnable_params(), resumed.net.learnable_params()):
        assert torch.equal(a.tensor, b.tensor), a.name
    assert straight.net.layer("data").resume_state()["batch"] == 6
    assert resumed.net.layer("data").resume_state()["batch"] == 6


def test_rank_of_two_reads_its_chunk_of_clips(tree):
    """Several ranks (runtime.sharding): rank r's batch k holds the clips of batch 2k + r, so
    the two ranks together read the clips one process with twice the batch would."""
    from runtime.sharding import LayerShard
    text = layer_text(tree / "list.txt", extra="shuffle: true")
    whole = batches(build(text, seed=3), 6)
    rank1 = build(text, seed=3)
    rank1.data_shard = LayerShard(1, 2)
    for k, batch in enumerate(batches(rank1, 3)):
        for x, y in zip(batch, whole[2 * k + 1]):
            np.testing.assert_array_equal(x, y)
