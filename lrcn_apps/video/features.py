"""Per-frame features of videos computed with a net the user names (lrcn-video-data,
lrcn-describe).

A video is a file any ffmpeg build reads or a folder of frame images (sorted by name). Each
frame is resized to the net's Input height x width, turned into Caffe's BGR order and
preprocessed with the ``transform_param`` written on the net's Input layer (as the captioner's
deploy net carries it); the features are the named blob (such as ``fc7``), flattened per frame.
Features files (HDF5) hold one (frames, D) float32 dataset per video id.
"""

import os

import h5py
import numpy as np
import torch

import compiler
from compiler.errors import CompileError
from runtime import transform as image_transform
from runtime.net import Net
from lrcn_apps.activity.errors import ActivityError
from lrcn_apps.activity.video_io import read_video_frames, resize_frame
from lrcn_apps.caption.coco import DataError
from lrcn_apps.generation import describe, load_weights

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
FRAMES_PER_FORWARD = 64


def find_video(root, video):
    """The file ``root/video.<ext>`` or the frame folder ``root/video``."""
    folder = os.path.join(root, video)
    if os.path.isdir(folder):
        return folder
    if os.path.isdir(root):
        for name in sorted(os.listdir(root)):
            if os.path.splitext(name)[0] == video and os.path.isfile(os.path.join(root, name)):
                return os.path.join(root, name)
    raise DataError("no video %r in %s (looked for %s/ and %s.*)"
                    % (video, root, folder, folder))


def read_frames(path, every=1):
    """(n, H, W, 3) uint8 BGR frames of a video file or frame folder, every `every`-th one."""
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS))
        if not names:
            raise DataError("%s: the frame folder holds no images (%s)"
                            % (path, " ".join(IMAGE_EXTENSIONS)))
        try:
            frames = [image_transform.read_image(os.path.join(path, n)) for n in names[::every]]
        except CompileError as error:
            raise DataError(describe(error)) from None
        return np.stack(frames)
    try:
        return read_video_frames(path)[::every, :, :, ::-1]
    except ActivityError as error:
        raise DataError(str(error)) from None


class FrameFeatures:
    """A net (TEST phase, the given stages) whose blob `blob` is a frame's features."""

    def __init__(self, net_path, blob, weights=None, stages=(), device="cpu"):
        self.blob = blob
        try:
            self.net = Net(compiler.load_file(net_path, "net"), phase="TEST", stages=stages)
        except CompileError as error:
            raise DataError(describe(error)) from None
        inputs = [layer for layer in self.net.compiled.layers if layer.type == "Input"]
        if len(inputs) != 1 or len(inputs[0].tops) != 1:
            raise DataError("%s: the feature net needs exactly one Input layer with one top "
                            "(the frames)" % net_path)
        if blob not in self.net.blobs:
            raise DataError("%s: no blob %r; it has %s" % (net_path, blob,
                                                           ", ".join(self.net.blobs)))
        if weights:
            load_weights([self.net], weights, stages)
        elif any(len(unit.blobs) for unit in self.net.units):
            raise DataError("%s: the net has learnable layers: give their --weights" % net_path)
        self.net.to(device).eval()
        self.device = torch.device(device)
        self.input = inputs[0].tops[0]
        self.transformer = image_transform.DataTransformer(inputs[0].param.transform_param,
                                                           "TEST")
        self.channels, self.height, self.width = inputs[0].top_shapes[0][1:]

    @torch.no_grad()
    def __call__(self, frames):
        """(n, H, W, 3) BGR uint8 frames -> (n, D) float32 features."""
        chunks = []
        for first in range(0, len(frames), FRAMES_PER_FORWARD):
            batch = np.stack([self.transformer(self._sized(frame))
                              for frame in frames[first:first + FRAMES_PER_FORWARD]])
            self.net.run({self.input: torch.from_numpy(batch).to(self.device)}, keep_all=True)
            chunks.append(self.net.blobs[self.blob].data.reshape(len(batch), -1).copy())
        return np.concatenate(chunks).astype(np.float32)

    def _sized(self, frame):
        if self.transformer.crop:
            return frame
        if self.channels == 1:
            frame = frame.mean(axis=2, keepdims=True).astype(np.uint8)
        return resize_frame(frame, (self.height, self.width)).reshape(
            self.height, self.width, self.channels)


def write_features(path, features):
    """{video id: (F, D) array} -> an HDF5 file, one dataset per video."""
    with h5py.File(path, "w") as out:
        for video, values in features.items():
            out.create_dataset(video, data=np.asarray(values, dtype=np.float32))


def read_features(path):
    """An HDF5 features file -> {video id: (F, D) float32}; DataError on anything else."""
    try:
        with h5py.File(path, "r") as source:
            features = {name: np.asarray(source[name][...], dtype=np.float32)
                        for name in source}
    except (OSError, KeyError, TypeError) as error:
        raise DataError("%s: not an HDF5 features file (%s)" % (path, error)) from None
    for video, values in features.items():
        if values.ndim != 2 or not len(values):
            raise DataError("%s: dataset %r has shape %s; expected (frames, D)"
                            % (path, video, values.shape))
        if not np.isfinite(values).all():
            raise DataError("%s: dataset %r holds NaN or infinite values" % (path, video))
    return features
