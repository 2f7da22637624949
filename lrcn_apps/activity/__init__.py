"""LRCN activity recognition (Donahue et al. 2015, section 4.1).

- `flow`: flow images (LRCN's 16 * flow + 128 encoding) and Farneback optical flow.
- `clips`: training clip sampling, time-major batch layout, test-protocol clips, 10-crop.
- `lists`: UCF-101 split files, classInd.txt, and the prepared video list files.
- `video_io`: reading and writing video files (imageio + imageio-ffmpeg), frame resizing.
- `prepare`: `lrcn-activity-data`, videos -> frames/ + flow_images/ + list files.
- `evaluate`: `lrcn-activity-eval`, per-video probabilities -> accuracy table, RGB/flow fusion.
- `motion_dataset`: a small synthetic dataset whose classes differ only in motion.
- `errors`: `ActivityError`, the user-facing error (`file:line: message`) of all of the above.

The modules above import neither compiler/ nor runtime/. The model side builds on them:
- `video_shapes`: the VideoData layer's shape rule (compiler side, no torch);
- `video_layer`: the VideoData layer unit (runtime side): clips of a video list as time-major
  data / label / clip_markers blobs;
- `run_eval`: `lrcn-activity-score`, a trained net over the test videos with the paper's
  protocol -> the per-video probabilities `evaluate` reads.
"""
