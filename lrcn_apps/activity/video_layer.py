"""The VideoData layer unit: LRCN's clip reader as a registered runtime unit (the original is
sequence_input_layer.py, LisaAnne/lisa-caffe-public@lstm_video_deploy,
examples/LRCN_activity_recognition).

Importing this module registers the unit ("VideoData") and its shape rule
(lrcn_apps.activity.video_shapes). Settings: lrcn_proto VideoDataParameter plus the layer's
transform_param. Tops (see video_shapes): data (T*N, 3, h, w) time-major, label (T*N,),
clip_markers (T*N,), all float32, channels in BGR order (frames decode as OpenCV would).

Which clips (batch k is a pure function of k, so prefetching with any number of workers and
resuming give the same batches):
- TRAIN (and TEST with test_stride 0): N videos per batch from a cyclic order over the list
  (a fresh permutation every epoch with `shuffle`, list order without), a batch crossing the
  end of an epoch taking the start of the next; one clip per video with LRCN's sampling
  (lrcn_apps.activity.clips.sample_clip: start frame uniform over the starts that fit, crop offset
  uniform, mirror coin, drawn in that order from the batch's generator).
- TEST with test_stride > 0: every video's consecutive clips (starts 0, s, 2s, ... and the
  last clip ending on the last frame: clips.evaluation_clip_starts), videos in list order,
  N clips per batch, wrapping around after the last clip of the last video.

Per clip, as Caffe's DataTransformer does per image but with ONE crop offset and ONE mirror flag
for all T frames: crop (random in TRAIN, centred in TEST), flow mirroring (is_flow, or the
fork's transform_param.flow: x-flow channel v -> clip(256 - v), flow.mirror_flow_image's rule),
minus mean_file / mean_value, times scale, then the horizontal flip. The mirror flag applies
when transform_param.mirror is set, in both phases (Caffe's rule).

resume_state() / restore_state(state) carry the batch position across a snapshot (the solver's
.lrcn sidecar), so a resumed run reads exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

import collections
import threading

import numpy as np
import torch

from compiler import data_shapes, data_sources
from compiler.errors import CompileError
from compiler.shapes import ShapeContext
from runtime import prefetch, sharding
from runtime.layers.base import CaffeLayer
from runtime.layers.registry import register
from runtime.transform import DecodedImages, decode_image, load_mean_file, resize_bilinear
from lrcn_apps.activity import video_shapes
from lrcn_apps.activity.clips import (ClipSample, clip_frame_indices, clip_markers,
                                  evaluation_clip_starts, sample_clip)

# Purposes of the layer's random streams: prefetch.batch_rng(seed, purpose, index...).
_BATCH, _SHUFFLE = 0, 1
FRAME_CACHE_BYTES = 256 << 20     # decoded frames kept in memory per layer


def _location(layer):
    location = getattr(layer, "location", None)
    return tuple(location) if location else (None, None, None)


# ---------------------------------------------------------------------------------------------
# Frames on disk

class VideoSource:
    """The videos of a list file and their frames (decoded BGR, resized, kept in memory)."""

    def __init__(self, layer_param, naming_file=None, location=(None, None, None),
                 cache_bytes=FRAME_CACHE_BYTES):
        param = layer_param.video_data_param
        self.list_file = video_shapes.resolve_list(layer_param, naming_file, location)
        self.entries = video_shapes.read_list(self.list_file)
        self.root = video_shapes.frames_root(layer_param, self.list_file, naming_file, location)
        self.size = (param.new_height, param.new_width) if param.new_height > 0 else None
        self.frame_counts = np.array([e.num_frames for e in self.entries], dtype=np.int64)
        self.labels = np.array([e.label for e in self.entries], dtype=np.int64)
        self.decoded = DecodedImages(cache_bytes, least_recent=True)

    def __len__(self):
        return len(self.entries)

    def name(self, video):
        """The video's id: its frame folder's name (v_X)."""
        return self.entries[video].folder.rstrip("/").split("/")[-1]

    def frame(self, video, index):
        """Frame `index` (0-based) of video `video` as (H, W, 3) uint8 BGR (read-only: it may
        be the copy kept for the next clip that shows it)."""
        entry = self.entries[video]
        path = video_shapes.frame_file(self.root, entry, int(index))
        where = (self.list_file, None)

        def decode():
            image = decode_image(path, True, where)
            return image if self.size is None else resize_bilinear(image, *self.size)
        try:
            return self.decoded.read((video, int(index)), path, decode)
        except data_sources.MissingSource:
            raise CompileError(f"video {entry.folder}: frame {index + 1} of {entry.num_frames} "
                               f"not found: {path}", *where,
                               hint="the list's num_frames must not exceed the frames in the "
                                    "folder (re-run lrcn-activity-data)") from None

    def clip(self, video, frames):
        """(T, H, W, 3) uint8 frames of one clip."""
        images = [self.frame(video, index) for index in frames]
        first = images[0].shape
        for index, image in zip(frames, images):
            if image.shape != first:
                raise CompileError(
                    f"frame {index + 1} of {self.entries[video].folder} is "
                    f"{image.shape[0]} x {image.shape[1]} but its first frame is "
                    f"{first[0]} x {first[1]}", self.list_file,
                    hint="set new_height / new_width to resize every frame to one size")
        return np.stack(images)

    def frame_size(self):
        return tuple(self.frame(0, 0).shape[:2])


# ---------------------------------------------------------------------------------------------
# Per-clip transform

class ClipTransform:
    """DataTransformer semantics applied to a whole clip with one crop offset and mirror flag."""

    def __init__(self, layer_param, phase, naming_file=None, location=None):
        transform = layer_param.transform_param
        data_shapes.check_transform(transform, video_shapes.CHANNELS)
        self.train = phase == "TRAIN"
        self.crop = int(transform.crop_size)
        self.mirror = bool(transform.mirror)
        self.flow = bool(layer_param.video_data_param.is_flow or transform.flow)
        self.scale = np.float32(transform.scale)
        self.mean = (load_mean_file(transform.mean_file, naming_file, location)
                     if transform.HasField("mean_file") else None)
        self.mean_values = np.asarray(transform.mean_value, dtype=np.float32)

    def crop_size(self, frame_size):
        return (self.crop, self.crop) if self.crop else tuple(frame_size)

    def centre(self, frame_size):
        (height, width), (crop_h, crop_w) = frame_size, self.crop_size(frame_size)
        return (height - crop_h) // 2, (width - crop_w) // 2

    def __call__(self, frames, y, x, mirror):
        """(T, H, W, C) uint8 BGR -> (T, C, h, w) float32, cropped at (y, x)."""
        height, width = frames.shape[1:3]
        crop_h, crop_w = self.crop_size((height, width))
        if self.mean is not None and self.mean.shape != (frames.shape[3], height, width):
            raise CompileError(f"mean file is {' x '.join(map(str, self.mean.shape))} but the "
                               f"frames are {frames.shape[3]} x {height} x {width}",
                               hint="Caffe subtracts the mean pixel by pixel before cropping")
        rows, cols = slice(y, y + crop_h), slice(x, x + crop_w)
        patch = frames[:, rows, cols].transpose(0, 3, 1, 2).astype(np.float32)
        if self.flow and mirror:
            # BGR order: channel 2 holds 16 * flow_x + 128; negating flow_x is 256 - v.
            patch[:, 2] = np.clip(256.0 - patch[:, 2], 0.0, 255.0)
        if self.mean is not None:
            patch -= self.mean[None, :, rows, cols]
        elif self.mean_values.size:
            patch -= self.mean_values.reshape(1, -1, 1, 1)
        if self.scale != 1:
            patch *= self.scale
        if mirror:
            patch = patch[:, :, :, ::-1]
        return np.ascontiguousarray(patch)


# ---------------------------------------------------------------------------------------------
# Which clips go into batch k

class ClipPlan:
    """Batch k's clips as a pure function of k (see the module docstring)."""

    def __init__(self, frame_counts, seed, clip_length, clips_per_batch, phase, shuffle,
                 test_stride, frame_size, crop_size, mirror):
        self.frame_counts = np.asarray(frame_counts, dtype=np.int64)
        self.seed = seed
        self.T = int(clip_length)
        self.N = int(clips_per_batch)
        self.train = phase == "TRAIN"
        self.shuffle = bool(shuffle)
        self.sequential = not self.train and test_stride > 0
        self.frame_size = tuple(frame_size)
        self.crop_size = tuple(crop_size)
        self.mirror = bool(mirror)
        self._orders = collections.OrderedDict()
        self._lock = threading.Lock()
        if self.sequential:
            starts = [evaluation_clip_starts(int(n), self.T, int(test_stride))
                      for n in self.frame_counts]
            self.test_clips = np.array([(v, s) for v, video_starts in enumerate(starts)
                                        for s in video_starts], dtype=np.int64)

    @property
    def clips_per_epoch(self):
        return len(self.test_clips) if self.sequential else len(self.frame_counts)

    def video_order(self, epoch):
        if not self.shuffle:
            return np.arange(len(self.frame_counts))
        with self._lock:
            if epoch not in self._orders:
                self._orders[epoch] = prefetch.batch_rng(self.seed, _SHUFFLE, epoch) \
                    .permutation(len(self.frame_counts))
                while len(self._orders) > 4:
                    self._orders.popitem(last=False)
            return self._orders[epoch]

    def batch(self, index):
        """The N ClipSamples of batch `index`, in batch order."""
        rng = prefetch.batch_rng(self.seed, _BATCH, index)
        positions = index * self.N + np.arange(self.N)
        if self.sequential:
            return [self._test_clip(int(p), rng) for p in positions]
        clips = []
        for position in positions:
            epoch, offset = divmod(int(position), len(self.frame_counts))
            video = int(self.video_order(epoch)[offset])
            clip = sample_clip(video, int(self.frame_counts[video]), rng, self.T,
                               self.frame_size, self.crop_size)
            if not self.train:
                y, x = self._centre()
                clip = ClipSample(clip.video, clip.frames, y, x, clip.mirror)
            clips.append(ClipSample(clip.video, clip.frames, clip.crop_y, clip.crop_x,
                                    clip.mirror and self.mirror))
        return clips

    def _centre(self):
        (height, width), (crop_h, crop_w) = self.frame_size, self.crop_size
        return (height - crop_h) // 2, (width - crop_w) // 2

    def _test_clip(self, position, rng):
        video, start = self.test_clips[position % len(self.test_clips)]
        frames = clip_frame_indices(int(start), int(self.frame_counts[video]), self.T)
        y, x = self._centre()
        mirror = bool(rng.integers(0, 2)) if self.mirror else False
        return ClipSample(int(video), frames, y, x, mirror)


# ---------------------------------------------------------------------------------------------
# The unit

@register(video_shapes.LAYER_TYPE)
class VideoData(CaffeLayer):
    """LRCN's clip data layer; see the module docstring."""

    shape_rule = staticmethod(video_shapes.video_data_shapes)
    shardable = True

    def __init__(self, layer, rng=None):
        super().__init__(layer, rng)
        file, line, col = _location(layer)
        param = self.param.video_data_param
        self.shape_rule(self.param, [], self._context())            # setup checks
        self.seed = prefetch.layer_seed(self.rng, layer.name)
        self.workers = prefetch.data_options().workers
        self.depth = data_shapes.DEFAULT_PREFETCH
        self.source = VideoSource(self.param, file, (file, line, col))
        self.transform = ClipTransform(self.param, self.phase, file, (file, line, col))
        self.T, self.N = int(param.clip_length), int(param.clips_per_batch)
        frame_size = self.source.size or self.source.frame_size()
        self.plan = ClipPlan(self.source.frame_counts, self.seed, self.T, self.N, self.phase,
                             param.shuffle, param.test_stride, frame_size,
                             self.transform.crop_size(frame_size), self.transform.mirror)
        self.markers = clip_markers(self.T, self.N)
        self._offset = 0          # batch index the prefetcher's batch 0 stands for
        self._consumed = 0        # batches delivered by forward()
        self._prefetcher = None

    # -- batches ----------------------------------------------------------------------------

    def load_batch(self, index):
        """Batch `index` as numpy arrays (data, label, clip_markers)[:tops]; thread-safe."""
        clips = self.plan.batch(index)
        data = None
        for n, clip in enumerate(clips):
            frames = self.source.clip(clip.video, clip.frames)
            patch = self.transform(frames, clip.crop_y, clip.crop_x, clip.mirror)
            if data is None:
                data = np.empty((self.T, self.N) + patch.shape[1:], np.float32)
            elif patch.shape[1:] != data.shape[2:]:
                raise CompileError(
                    f"video {self.source.entries[clip.video].folder} gives "
                    f"{' x '.join(map(str, patch.shape[1:]))} frames but the batch's first "
                    f"clip gave {' x '.join(map(str, data.shape[2:]))}", self.source.list_file,
                    hint="every clip of a batch needs one size: set new_height / new_width "
                         "(or crop_size)")
            data[:, n] = patch                        # time-major: row t * N + n
        labels = np.tile(self.source.labels[[clip.video for clip in clips]], self.T)
        data = data.reshape((self.T * self.N,) + data.shape[2:])
        arrays = (data, labels.astype(np.float32), self.markers.copy())
        return arrays[:len(self.layer.tops)]

    def batch_clips(self, index):
        """The ClipSamples of batch `index` (which videos, frames, crops, mirrors)."""
        return self.plan.batch(index)

    def _produce(self, index):
        # sharding.load: on several ranks, this rank's clips of each batch.
        return sharding.load(self, index + self._offset)

    def forward(self):
        if self._prefetcher is None:
            self._prefetcher = prefetch.Prefetcher(self._produce, self.workers, self.depth,
                                                   self.layer.name)
        arrays = self._prefetcher.next()
        self._consumed += 1
        return tuple(torch.from_numpy(array) for array in arrays)

    def _restart(self, position):
        self.close()
        self._offset = self._consumed = int(position)

    def set_workers(self, workers):
        """Change the number of prefetch workers; the order of batches is kept."""
        self.workers = int(workers)
        self._restart(self._consumed)

    def close(self):
        if self._prefetcher is not None:
            self._prefetcher.close()
            self._prefetcher = None

    # -- resuming ---------------------------------------------------------------------------

    def resume_state(self):
        """What a snapshot needs to continue this layer's stream exactly."""
        return {"type": video_shapes.LAYER_TYPE, "batch": self._consumed,
                "seed": list(self.seed)}

    def restore_state(self, state):
        """Continue from a resume_state(): the next forward delivers batch state["batch"]."""
        self._restart(state["batch"])

    # -- shapes -----------------------------------------------------------------------------

    def top_shapes(self):
        known = list(getattr(self.layer, "top_shapes", None) or [])
        if len(known) == len(self.layer.tops) and all(s is not None for s in known):
            return [tuple(s) for s in known]
        frame_size = self.plan.frame_size
        h, w = self.transform.crop_size(frame_size)
        rows = self.T * self.N
        shapes = [(rows, video_shapes.CHANNELS, h, w), (rows,), (rows,)]
        return shapes[:len(self.layer.tops)]

    def _context(self):
        file, line, col = _location(self.layer)
        return ShapeContext(self.phase, file, {}, (file, line, col))
