"""Shape rule of the VideoData layer (this project's own type; see lrcn_proto VideoDataParameter).

Tops, for clip length T and N clips per batch:

    data          (T * N, 3, h, w)   time-major: row t * N + n is frame t of clip n
    label         (T * N,)           the clip's label on every row
    clip_markers  (T * N,)           0 on each clip's first frame (rows 0..N-1), 1 elsewhere

h x w is transform_param.crop_size when set, else the frame size: new_height x new_width when
set, else the size of the first listed video's first frame (read from its header). When the
list file or that frame is absent the shapes are unknown (None), as for the other data layers.

Importing this module registers the rule (`compiler.shapes.shape_rule("VideoData")`); nothing
here imports torch. It also holds the path rules the runtime unit shares:
- `source` is resolved like every path in a net file (working directory, then the net file's
  folder);
- a frame folder of the list is `root_folder/frame_folder` when root_folder is set (root_folder
  resolved like `source`), else relative to the list file's own folder (what lrcn-activity-data
  writes).
"""
from __future__ import annotations

import os

from compiler import data_shapes, data_sources
from compiler.errors import CompileError
from compiler.layer_types import DATA, BlobCounts, declare
from compiler.shapes import LayerShapes
from lrcn_apps.activity.errors import ActivityError
from lrcn_apps.activity.lists import VideoListEntry, frame_file_name, read_video_list

LAYER_TYPE = "VideoData"
CHANNELS = 3          # frames and flow images are always decoded as 3-channel BGR


def check_video_param(layer):
    """VideoDataParameter checks that need no file (setup errors Caffe-style)."""
    param = layer.video_data_param
    if not param.source:
        raise CompileError(f"VideoData layer '{layer.name}' needs video_data_param.source",
                           hint="a list file of `frame_folder label num_frames` lines, as "
                                "lrcn-activity-data writes")
    data_shapes.check_positive(param.clip_length, "video_data_param.clip_length", layer)
    data_shapes.check_positive(param.clips_per_batch, "video_data_param.clips_per_batch", layer)
    if (param.new_height > 0) != (param.new_width > 0):
        raise CompileError("new_height and new_width must be set at the same time",
                           hint="set both to resize every frame, or neither")
    data_shapes.check_transform(layer.transform_param, CHANNELS)


def resolve_list(layer, naming_file, location):
    """The list file's path; MissingSource when it is absent."""
    return data_sources.resolve_source(layer.video_data_param.source, naming_file,
                                       "video list file", location)


def read_list(list_file):
    """The list's entries; a malformed list is a CompileError at its line."""
    try:
        return read_video_list(list_file)
    except ActivityError as error:
        raise CompileError(error.message, error.file, error.line) from None


def frames_root(layer, list_file, naming_file, location):
    """The folder the list's frame folders are relative to."""
    root = layer.video_data_param.root_folder
    if not root:
        return os.path.dirname(os.path.abspath(list_file))
    return data_sources.resolve_source(root, naming_file, "root_folder", location)


def frame_folder(root, entry: VideoListEntry) -> str:
    return os.path.join(root, *entry.folder.split("/"))


def frame_file(root, entry: VideoListEntry, index: int) -> str:
    """Frame `index` (0-based) of a list entry: <folder>/<folder name>.<index + 1:04d>.jpg."""
    folder = frame_folder(root, entry)
    return os.path.join(folder, frame_file_name(os.path.basename(folder), index))


def frame_size(layer, naming_file, location):
    """(height, width) of the frames the layer delivers before cropping, or None if unknown."""
    param = layer.video_data_param
    if param.new_height > 0:
        return param.new_height, param.new_width
    try:
        list_file = resolve_list(layer, naming_file, location)
        entries = read_list(list_file)
        root = frames_root(layer, list_file, naming_file, location)
        header = data_sources.image_header(frame_file(root, entries[0], 0), (list_file, 1))
    except data_sources.MissingSource:
        return None
    return header.height, header.width


def output_size(layer, size):
    """(h, w) of the data top for frames of `size`, with the crop checks."""
    crop = layer.transform_param.crop_size
    if not crop:
        return size
    height, width = size
    if height < crop or width < crop:
        raise CompileError(f"crop_size {crop} is larger than the {height} x {width} frames of "
                           f"VideoData layer '{layer.name}'",
                           hint="resize the frames (new_height / new_width) or reduce crop_size")
    return crop, crop


# No bottoms; tops data, then optionally label and clip_markers (the single-frame net reads
# clips of one frame and leaves clip_markers out).
@declare(LAYER_TYPE, counts=BlobCounts(0, 0, 1, 3), traits={DATA})
def video_data_shapes(layer, bottom_shapes, context):
    check_video_param(layer)
    param = layer.video_data_param
    rows = param.clip_length * param.clips_per_batch
    size = frame_size(layer, context.net_file, context.location)
    if size is None:
        return LayerShapes([None] * len(layer.top))
    height, width = output_size(layer, size)
    shapes = [(rows, CHANNELS, height, width), (rows,), (rows,)]
    return LayerShapes(shapes[:len(layer.top)])
