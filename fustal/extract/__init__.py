"""``python -m fustal.extract VIDEO_DIR OUT_DIR``: features of raw video files in the custom
layout (``conf/features/custom.yaml``): ``OUT_DIR/<video>.npy`` ``[T, D]`` per video, the sidecar
``OUT_DIR/features.json`` (fps, window, stride, backbone) and ``OUT_DIR/videos.csv`` (duration and
fps of each video). See :mod:`fustal.extract.extractor` and docs/custom_dataset.md."""
