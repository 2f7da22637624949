"""Image decoding and Caffe's DataTransformer, on numpy arrays (no torch here).

Decoding follows what Caffe gets from OpenCV, using Pillow:
- channels in BGR order (OpenCV's), alpha dropped for colour, EXIF orientation applied;
- gray decodes of JPEGs take libjpeg's Y channel and PNGs libpng's conversion, as OpenCV's
  IMREAD_GRAYSCALE does; other formats use OpenCV's BGR2GRAY weights (checked equal to
  OpenCV's decode for JPEG, PNG, BMP and TIFF in colour, gray and unchanged modes);
- resizing is OpenCV's INTER_LINEAR (half-pixel centres, no antialiasing, 11-bit fixed-point
  weights), re-implemented in numpy. Pillow's own bilinear filter antialiases when shrinking and
  would give visibly different pixels. Downscaling matches OpenCV bit for bit; upscaling may
  differ by one grey level on a few border pixels.

DataTransformer reproduces data_transformer.cpp: (pixel - mean) * scale, the mean from a
BlobProto file or per-channel mean_value; crop_size random in TRAIN and centred in TEST;
mirror random in both phases when set; the LRCN fork's `flow`. Random draws come from a numpy
Generator handed in by the caller, in Caffe's order (mirror coin, then row offset, then column
offset), so a data layer can derive every batch's draws from (seed, batch index).
"""

import collections
import io
import os
import threading

import numpy as np

from compiler import data_shapes, data_sources
from compiler.errors import CompileError

# OpenCV's INTER_RESIZE_COEF_BITS: bilinear weights are integers out of 2048.
_COEF_SCALE = 2048
# OpenCV's BGR2GRAY in 14-bit fixed point (0.114, 0.587, 0.299).
_GRAY_WEIGHTS = (1868, 9617, 4899)
# libpng's png_set_rgb_to_gray(0.299, 0.587), which OpenCV's PNG decoder asks for: 15-bit.
_PNG_GRAY_WEIGHTS = (3737, 19234, 9797)
# EXIF orientation -> the Pillow transpose that undoes it.
_EXIF_TRANSPOSE = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM",
                   5: "TRANSPOSE", 6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}


# --- decoding ------------------------------------------------------------------------------

def decode_image(source, color=True, where=(None, None)):
    """An image file path (or encoded bytes) -> HWC uint8 array, channels BGR(A).

    color: True -> 3 channels, False -> 1 channel, None -> as stored (OpenCV IMREAD_UNCHANGED).
    `where` is the (file, line) that named the image, for errors.
    """
    from PIL import Image, UnidentifiedImageError
    name = source if isinstance(source, str) else "encoded image"
    try:
        with Image.open(source if isinstance(source, str) else io.BytesIO(source)) as image:
            if color is False and image.format == "JPEG" and image.mode in ("RGB", "YCbCr"):
                # libjpeg then outputs luma only, which is what OpenCV's gray decode returns.
                image.draft("L", image.size)
            image.load()
            return _to_array(_oriented(image), color, image.format)
    except FileNotFoundError:
        raise data_sources.MissingSource(f"image not found: {name}", *where) from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError,
            SyntaxError) as error:
        raise CompileError(f"cannot decode image {name}: {error}", *where,
                           hint="the file is damaged or not an image") from None


def _oriented(image):
    from PIL import Image
    orientation = data_sources._orientation(image)
    if orientation in _EXIF_TRANSPOSE:
        return image.transpose(getattr(Image.Transpose, _EXIF_TRANSPOSE[orientation]))
    return image


def _to_array(image, color, file_format=None):
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit images: OpenCV scales them to 8 bits unless asked for the full depth.
        wide = np.asarray(image).astype(np.float64)
        image_array = np.clip(np.rint(wide / 256.0), 0, 255).astype(np.uint8)[:, :, None]
    elif image.mode in ("L", "1"):
        image_array = np.asarray(image.convert("L"))[:, :, None]
    elif image.mode == "LA" and color is not True:
        image_array = np.asarray(image)
    elif image.mode == "RGBA" and color is None:
        image_array = np.asarray(image)[:, :, [2, 1, 0, 3]]
    else:
        image_array = np.asarray(image.convert("RGB"))[:, :, ::-1]
    channels = image_array.shape[2]
    if color is True and channels != 3:
        gray = image_array[:, :, :1]
        image_array = np.repeat(gray, 3, axis=2)
    elif color is False and channels != 1:
        image_array = bgr_to_gray(image_array[:, :, :3], file_format) if channels >= 3 \
            else image_array[:, :, :1]
    return np.ascontiguousarray(image_array)


def bgr_to_gray(image, file_format=None):
    """An HWC uint8 BGR array -> HW1 gray, as OpenCV's gray decode of that format gives it:
    libpng's own conversion for PNG (15-bit weights, truncated), cvtColor's BGR2GRAY (14-bit
    weights, rounded) otherwise."""
    b, g, r = (image[:, :, i].astype(np.int32) for i in range(3))
    if file_format == "PNG":
        wb, wg, wr = _PNG_GRAY_WEIGHTS
        gray = (b * wb + g * wg + r * wr) >> 15
    else:
        wb, wg, wr = _GRAY_WEIGHTS
        gray = (b * wb + g * wg + r * wr + (1 << 13)) >> 14
    return gray.astype(np.uint8)[:, :, None]


# --- resizing ------------------------------------------------------------------------------

def _linear_taps(source, target):
    """Per output index along one axis: the two source indices and their integer weights,
    exactly as OpenCV's resize computes them for INTER_LINEAR."""
    scale = 1.0 / (np.float64(target) / source)
    position = ((np.arange(target) + 0.5) * scale - 0.5).astype(np.float32)
    first = np.floor(position).astype(np.int64)
    fraction = (position - first.astype(np.float32)).astype(np.float32)
    below = first < 0
    fraction[below], first[below] = 0, 0
    above = first >= source - 1
    fraction[above], first[above] = 0, source - 1
    weight = np.rint((np.float32(1) - fraction) * np.float32(_COEF_SCALE)).astype(np.int64)
    return first, np.minimum(first + 1, source - 1), weight, _COEF_SCALE - weight


def resize_bilinear(image, height, width):
    """cv::resize(image, Size(width, height)) with INTER_LINEAR, on an HWC uint8 array."""
    source_height, source_width, channels = image.shape
    if (source_height, source_width) == (height, width):
        return image
    rows0, rows1, beta0, beta1 = _linear_taps(source_height, height)
    cols0, cols1, alpha0, alpha1 = _linear_taps(source_width, width)
    # Only the source rows some output row reads take part in the horizontal pass.
    used, inverse = np.unique(np.concatenate([rows0, rows1]), return_inverse=True)
    # Rows as flat (width * channels) vectors: gathering whole pixels with np.take on a 2-D
    # array is several times faster than fancy indexing the 3-D array.
    flat = image.reshape(source_height, source_width * channels)[used]
    offsets = np.arange(channels)
    left = np.take(flat, (cols0[:, None] * channels + offsets).ravel(), axis=1).astype(np.int32)
    left *= np.repeat(alpha0, channels).astype(np.int32)
    right = np.take(flat, (cols1[:, None] * channels + offsets).ravel(), axis=1).astype(np.int32)
    right *= np.repeat(alpha1, channels).astype(np.int32)
    left += right
    # The vertical pass with the rounding of OpenCV's vectorised 8-bit path:
    # ((b0 * (S0 >> 4)) >> 16) + ((b1 * (S1 >> 4)) >> 16), then (+ 2) >> 2.
    left >>= 4
    top = np.take(left, inverse[:height], axis=0)
    top *= beta0.astype(np.int32)[:, None]
    top >>= 16
    bottom = np.take(left, inverse[height:], axis=0)
    bottom *= beta1.astype(np.int32)[:, None]
    bottom >>= 16
    top += bottom
    top += 2
    top >>= 2
    np.clip(top, 0, 255, out=top)
    return top.astype(np.uint8).reshape(height, width, channels)


def read_image(path, new_height=0, new_width=0, is_color=True, min_height=0, min_width=0,
               where=(None, None)):
    """ReadImageToCVMat of lisa-caffe-public: decode, then warp to new_height x new_width, or
    scale up (keeping the aspect ratio) to at least min_height x min_width."""
    image = decode_image(path, is_color, where)
    if new_height > 0 and new_width > 0:
        return resize_bilinear(image, new_height, new_width)
    height, width = image.shape[:2]
    target = data_sources.fork_min_size(height, width, min_height, min_width)
    if target != (height, width):
        image = resize_bilinear(image, *target)
    return image


class DecodedImages:
    """Decoded images kept in memory, up to `budget` bytes, so that files read again and again
    are decoded once. Decoding a small PNG is mostly Python work in Pillow that holds the GIL,
    so a prefetch thread cannot hide it (the main job: ~8 ms of a ~90 ms step). An entry
    serves only while its file has the size, modification time and inode it was decoded from:
    an image edited during training is read again, as Caffe, which decodes every time, would.

    What happens once the budget is spent depends on how the files are read:
    - `least_recent=False` (a list read in order, epoch after epoch: ImageData): no more entries
      are added. Evicting would not help: the oldest entry is always the next one needed, so
      the cache would keep none of the list where this policy keeps `budget` bytes of it.
    - `least_recent=True` (clips sampled over videos: VideoData): the least recently used
      entries make room, so frames that neighbouring clips share stay.
    """

    def __init__(self, budget, least_recent=False):
        self.budget = budget
        self.used = 0
        self.least_recent = least_recent
        self._entries = collections.OrderedDict()
        self._lock = threading.Lock()

    def read(self, key, path, decode):
        """decode() of the file at `path`, or the copy kept under `key` from an earlier call
        on the same file contents. The arrays it returns are shared: they are read-only."""
        try:
            status = os.stat(path)
        except OSError:
            return decode()         # which reports the missing file as decoding it would
        stamp = (status.st_mtime_ns, status.st_size, status.st_ino)
        with self._lock:
            kept = self._entries.get(key)
            if kept is not None and kept[0] == stamp:
                if self.least_recent:
                    self._entries.move_to_end(key)
                return kept[1]
        image = decode()
        image.flags.writeable = False
        with self._lock:
            self._forget(key)
            if self.least_recent:
                while self._entries and self.used + image.nbytes > self.budget:
                    self._forget(next(iter(self._entries)))
            if self.used + image.nbytes <= self.budget:
                self._entries[key] = (stamp, image)
                self.used += image.nbytes
        return image

    def _forget(self, key):
        kept = self._entries.pop(key, None)
        if kept is not None:
            self.used -= kept[1].nbytes


def read_for_input(path, transformer, input_shape):
    """An image file -> (C, H, W) float32 for an Input blob of `input_shape` (C, H, W), as a
    TEST-phase ImageData layer with `transformer`'s parameters reads it: resized to H x W
    first unless the transform crops (then the crop decides)."""
    channels, height, width = input_shape
    crops = transformer.crop > 0
    image = read_image(path, 0 if crops else height, 0 if crops else width,
                       is_color=channels == 3)
    return transformer(image)


# --- the transformer -----------------------------------------------------------------------

def load_mean_file(path, naming_file=None, location=None):
    """The mean of a .binaryproto as a (C, H, W) float32 array."""
    resolved = data_sources.resolve_source(path, naming_file, "mean file", location)
    data_sources.mean_image_shape(resolved)          # checks it is 1 x C x H x W
    mean = data_sources.read_blob_proto(resolved)
    return mean.reshape(mean.shape[-3:]).astype(np.float32)


def chw_shape(data, layout):
    """(C, H, W) of an HWC or CHW array."""
    return tuple(data.shape) if layout == "CHW" else (data.shape[2],) + tuple(data.shape[:2])


class DataTransformer:
    """Caffe's DataTransformer for one layer's TransformationParameter and phase."""

    def __init__(self, param, phase, naming_file=None, location=None):
        data_shapes.check_transform(param)
        self.param = param
        self.train = phase == "TRAIN"
        self.scale = np.float32(param.scale)
        self.crop = param.crop_size
        self.mirror = param.mirror
        self.flow = param.flow
        self.mean = (load_mean_file(param.mean_file, naming_file, location)
                     if param.HasField("mean_file") else None)
        self.mean_values = np.asarray(param.mean_value, dtype=np.float32)

    @property
    def needs_random(self):
        # DataTransformer::InitRand: random numbers only for mirroring or TRAIN cropping.
        return self.mirror or (self.train and self.crop > 0)

    def output_shape(self, channels, height, width):
        return (channels, self.crop, self.crop) if self.crop else (channels, height, width)

    def __call__(self, data, rng=None, layout="HWC", where=(None, None)):
        """Transform one image (HWC, as decoded) or one Datum array (CHW) -> CHW float32,
        drawing its mirror coin and crop offsets from `rng`."""
        return self.apply(data, self.choose(data, rng, layout, where), layout)

    def choose(self, data, rng=None, layout="HWC", where=(None, None)):
        """Check one input against the parameters and draw its choice (see `draw`)."""
        channels, height, width = chw_shape(data, layout)
        self._check(channels, height, width, where)
        return self.draw(rng, height, width)

    def draw(self, rng, height, width):
        """(mirror, row offset, column offset) for an input of height x width, drawn in
        Caffe's order: the mirror coin (only when mirroring), then the offsets (only when
        cropping in TRAIN; TEST crops the centre). A clip reader draws once per clip and
        applies the choice to every frame."""
        mirror = bool(self.mirror and rng.integers(2))
        if not self.crop:
            return mirror, 0, 0
        if height < self.crop or width < self.crop:
            raise CompileError(f"crop_size {self.crop} is larger than the {height} x {width} "
                               "image", hint="resize the images or reduce crop_size")
        if self.train:
            return (mirror, int(rng.integers(height - self.crop + 1)),
                    int(rng.integers(width - self.crop + 1)))
        return mirror, (height - self.crop) // 2, (width - self.crop) // 2

    def apply(self, data, choice, layout="HWC", where=(None, None)):
        """Transform with a drawn (mirror, row offset, column offset) choice."""
        channels, height, width = chw_shape(data, layout)
        self._check(channels, height, width, where)
        return self.apply_batch([data], [choice], layout)[0]

    def apply_batch(self, inputs, choices, layout="HWC"):
        """Checked inputs with one output shape and their drawn choices -> (N, C, h, w)
        float32, each item what `apply` gives it. The per-pixel arithmetic runs once over the
        whole batch: for small images, per-image numpy calls cost more than the pixels (the
        main job's batch of 50: 0.40 ms, against 0.75 ms image by image)."""
        batch = np.stack([self._window(data, choice, layout)
                          for data, choice in zip(inputs, choices)], dtype=np.float32)
        mirrored = [item for item, (do_mirror, _, _) in enumerate(choices) if do_mirror]
        if self.flow and mirrored and batch.shape[1] > 2:
            # The fork's rule: channel 2 (the x flow, red in BGR order) stored as 16*x + 128
            # becomes 255 - value when mirrored, before the mean is subtracted. The fork wrote it
            # only in its Datum path; its cv::Mat path (ImageData) mirrored flow images without
            # it. Here it applies to every input, as the field means.
            batch[mirrored, 2] = 255 - batch[mirrored, 2]
        if self.mean is not None:
            # Each pixel loses the mean at its own position: the mean is cut and mirrored with it.
            batch -= np.stack([self._window(self.mean, choice, "CHW") for choice in choices])
        elif self.mean_values.size:
            batch -= self.mean_values.reshape(1, -1, 1, 1)
        if self.scale != 1:
            batch *= self.scale
        return batch

    def _window(self, data, choice, layout):
        """The (C, h, w) view of `data` that a choice keeps: its crop, mirrored if drawn."""
        do_mirror, h_off, w_off = choice
        if layout != "CHW":
            data = data.transpose(2, 0, 1)
        if self.crop:
            data = data[:, h_off:h_off + self.crop, w_off:w_off + self.crop]
        return data[:, :, ::-1] if do_mirror else data

    def _check(self, channels, height, width, where):
        if self.crop and (height < self.crop or width < self.crop):
            raise CompileError(f"crop_size {self.crop} is larger than the {height} x {width} "
                               "image", *where, hint="resize the images or reduce crop_size")
        if self.mean is not None and self.mean.shape != (channels, height, width):
            raise CompileError(f"mean file is {' x '.join(map(str, self.mean.shape))} but the "
                               f"image is {channels} x {height} x {width}", *where,
                               hint="Caffe subtracts the mean pixel by pixel before cropping, "
                                    "so their sizes must match")
        if self.mean_values.size not in (0, 1, channels):
            raise CompileError(f"{self.mean_values.size} mean_value entries for a "
                               f"{channels}-channel image", *where,
                               hint="specify either 1 mean_value or as many as channels")
