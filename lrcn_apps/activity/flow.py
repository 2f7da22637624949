"""LRCN flow images: optical flow stored as an 8-bit, 3-channel image.

The encoding is the one of LRCN's `create_flow_images_LRCN.m` (LisaAnne/lisa-caffe-public,
branch lstm_video_deploy, examples/LRCN_activity_recognition):

    channel 0 (R) = clip(16 * flow_x + 128, 0, 255)
    channel 1 (G) = clip(16 * flow_y + 128, 0, 255)
    channel 2 (B) = min(16 * sqrt(flow_x**2 + flow_y**2) + 128, 255)

flow_x points right and flow_y points down, in pixels per frame. The original wrote the float
image with MATLAB's `imwrite(flow_image ./ 255, ...)`, which converts to uint8 by rounding to
the nearest integer with halves away from zero; every value is non-negative after clipping,
so that is floor(v + 0.5) (numpy's `round` would send halves to even instead).

Flow image i (1-based, as in the file names) is the flow from frame i to frame i + 1, so a
video of n frames has n - 1 flow images. (The original named each flow image after the
second frame of its pair, numbering them 2..n; here they are numbered 1..n-1 like the frames
they start from, so RGB frame i and flow image i describe the same moment.)

The original computed Brox et al. (2004) flow with a MEX file; this project uses OpenCV's
Farneback flow instead (cv2 is imported only when flow is computed, so the encoding
functions are plain numpy).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from compiler.extras import require

FLOW_SCALE = 16.0
FLOW_OFFSET = 128.0

# Flow values that survive the encoding unclipped: 16 * f + 128 in [0, 255].
REPRESENTABLE_FLOW = ((0.0 - FLOW_OFFSET) / FLOW_SCALE, (255.0 - FLOW_OFFSET) / FLOW_SCALE)
# Worst-case decode error for representable flow: half a quantisation step.
QUANTISATION_ERROR = 0.5 / FLOW_SCALE


def round_half_up(values: np.ndarray) -> np.ndarray:
    """MATLAB's double -> uint8 rounding for non-negative values (halves go up)."""
    return np.floor(values + 0.5)


def encode_flow(flow: np.ndarray) -> np.ndarray:
    """(H, W, 2) flow in pixels -> (H, W, 3) uint8 LRCN flow image."""
    flow = np.asarray(flow, dtype=np.float64)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow must have shape (H, W, 2), got {flow.shape}")
    # The magnitude uses the unclipped flow, as in the original.
    magnitude = np.sqrt(flow[..., 0] ** 2 + flow[..., 1] ** 2)
    image = np.empty(flow.shape[:2] + (3,), dtype=np.float64)
    image[..., :2] = np.clip(flow * FLOW_SCALE + FLOW_OFFSET, 0.0, 255.0)
    image[..., 2] = np.minimum(magnitude * FLOW_SCALE + FLOW_OFFSET, 255.0)
    return round_half_up(image).astype(np.uint8)


def decode_flow(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) LRCN flow image (uint8 or float on the 0..255 scale) -> (H, W, 2) float32.

    The magnitude channel is redundant and ignored; the decoded flow is exact up to the
    quantisation step (1/16 pixel) for flow inside REPRESENTABLE_FLOW, and saturated outside.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"flow image must have shape (H, W, 3), got {image.shape}")
    return ((image[..., :2].astype(np.float32) - FLOW_OFFSET) / FLOW_SCALE).astype(np.float32)


def mirror_flow_image(image: np.ndarray) -> np.ndarray:
    """Horizontally mirror a flow image: flip the columns and negate flow_x.

    Negating flow_x in encoded space is v -> 2 * 128 - v = 256 - v, clipped to 255 (the
    encoding of the negated flow when v was saturated at 0). This is the encoding of the
    mirrored flow field except where v = 255: that saturated value stands for any flow_x from
    7.91 up, whose negation encodes to 1 or 0, and 1 is returned. The original
    test script used 1 - v on [0, 1] images, i.e. 255 - v, a 1/16 pixel bias; the original
    data layer's own flip lives in its private caffe.io fork. y and the magnitude only move.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"flow image must have shape (H, W, 3), got {image.shape}")
    mirrored = image[:, ::-1, :].astype(np.float64)
    mirrored[..., 0] = np.clip(2.0 * FLOW_OFFSET - mirrored[..., 0], 0.0, 255.0)
    return mirrored.astype(image.dtype)


@dataclass(frozen=True)
class FarnebackParams:
    """Arguments of cv2.calcOpticalFlowFarneback; the defaults are OpenCV's usual ones.

    For very small frames (32 x 32) a smaller window and fewer levels keep the flow of a
    moving object from spreading over the background (e.g. winsize=7, levels=2).
    """

    pyr_scale: float = 0.5
    levels: int = 3
    winsize: int = 15
    iterations: int = 3
    poly_n: int = 5
    poly_sigma: float = 1.2


def to_gray(frame: np.ndarray) -> np.ndarray:
    """RGB (H, W, 3) or gray (H, W) uint8 frame -> gray (H, W) uint8."""
    cv2 = require("cv2", "computing optical flow")

    frame = np.ascontiguousarray(frame)
    if frame.ndim == 2:
        return frame.astype(np.uint8, copy=False)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return cv2.cvtColor(frame.astype(np.uint8, copy=False), cv2.COLOR_RGB2GRAY)
    raise ValueError(f"frame must be (H, W) or (H, W, 3), got {frame.shape}")


def compute_flow(frame0: np.ndarray, frame1: np.ndarray,
                 params: FarnebackParams = FarnebackParams()) -> np.ndarray:
    """Farneback optical flow from frame0 to frame1 -> (H, W, 2) float32, (x right, y down)."""
    cv2 = require("cv2", "computing optical flow")

    gray0, gray1 = to_gray(frame0), to_gray(frame1)
    if gray0.shape != gray1.shape:
        raise ValueError(f"frames differ in size: {gray0.shape} vs {gray1.shape}")
    return cv2.calcOpticalFlowFarneback(
        gray0, gray1, None, params.pyr_scale, params.levels, params.winsize,
        params.iterations, params.poly_n, params.poly_sigma, 0)


def video_flow_images(frames: Iterable[np.ndarray],
                      params: FarnebackParams = FarnebackParams()) -> Iterator[np.ndarray]:
    """Yield the n - 1 encoded flow images of n frames; image i is the flow from frame i to i+1.

    Each frame is converted to gray once and reused as the first frame of the next pair.
    """
    previous = None
    for frame in frames:
        gray = to_gray(frame)
        if previous is not None:
            yield encode_flow(compute_flow(previous, gray, params))
        previous = gray
