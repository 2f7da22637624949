"""LRCN activity recognition (Donahue et al. 2015, section 4.1): data and evaluation side.

- `flow`: flow images (LRCN's 16 * flow + 128 encoding) and Farneback optical flow.
- `clips`: training clip sampling, time-major batch layout, test-protocol clips, 10-crop.
- `lists`: UCF-101 split files, classInd.txt, and the prepared video list files.
- `video_io`: reading and writing video files (imageio + imageio-ffmpeg), frame resizing.
- `prepare`: `lrcn-activity-data`, videos -> frames/ + flow_images/ + list files.
- `evaluate`: `lrcn-activity-eval`, per-video probabilities -> accuracy table, RGB/flow fusion.
- `motion_dataset`: a small synthetic dataset whose classes differ only in motion.
- `errors`: `ActivityError`, the user-facing error (`file:line: message`) of all of the above.

Nothing here imports compiler/ or runtime/; the model and the data layer call into it.
"""
