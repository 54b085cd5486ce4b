"""The run's pictures (``RUN_DIR/pictures/``), drawn from the stages' outputs in memory: a timeline
per shown training video (ground truth, the generator's CAS, raw and filtered pseudo labels, the
student's detections) and per shown test video (ground truth, the CAS, the generator's and the
student's detections), and the pseudo labels' precision/recall over tIoU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fustal.data.annotations import Video
from fustal.metrics.results import VideoDetections, gt_to_detections, rows_to_detections
from fustal.pipeline.stage import RunContext
from fustal.pipeline.stages.common import picture_videos
from fustal.viz.pr import pr_summary
from fustal.viz.rundir import draw_run, segment_entries, write_inputs


def rows_entries(rows: np.ndarray, classes: list[str]) -> list[dict[str, Any]]:
    """``[K, 4]`` rows -> ``[{"label", "score", "segment"}]``."""
    return [
        {"label": classes[int(c)], "score": float(s), "segment": [float(a), float(b)]}
        for c, s, a, b in np.asarray(rows, np.float64).reshape(-1, 4)
    ]


def video_entry(
    video: Video, subset: str, tracks: dict[str, VideoDetections], classes: list[str]
) -> dict[str, Any]:
    return {
        "id": video.id,
        "subset": subset,
        "duration": video.duration,
        "tracks": {
            "ground truth": segment_entries(video.segments, video.labels, classes),
            **{
                name: rows_entries(per_video.get(video.id, np.zeros((0, 4))), classes)
                for name, per_video in tracks.items()
            },
        },
    }


def make_pictures(
    ctx: RunContext,
    train_tracks: dict[str, VideoDetections],
    test_tracks: dict[str, VideoDetections],
    pseudo: dict[str, VideoDetections],
    cas: dict[str, dict[str, Any]],
) -> list[Path]:
    """Write the picture inputs of the first ``plot_videos`` training and test videos and draw
    the PNGs (rank 0); ``pseudo``: the pseudo-label sets to compare with the training ground
    truth (``raw``, ``filtered``). Returns the PNG paths."""
    data = ctx.data.student
    count = int(ctx.cfg.plot_videos)
    classes = data.classes
    videos = [
        video_entry(v, "train", train_tracks, classes)
        for v in picture_videos(data.train_videos())[:count]
    ] + [
        video_entry(v, "test", test_tracks, classes)
        for v in picture_videos(data.test_videos())[:count]
    ]
    shown = {v["id"] for v in videos}
    pr = None
    if pseudo:
        gt, ids = gt_to_detections(data.train_videos())
        preds = {name: rows_to_detections(rows, ids) for name, rows in pseudo.items()}
        pr = pr_summary(gt, preds, len(classes))
    cfg = ctx.cfg
    threshold = cfg.filter.min_score if cfg.filter.min_score is not None else cfg.ema.score_thresh
    inputs = {
        "classes": classes,
        "videos": videos,
        "pseudo_label_pr": pr,
        "score_threshold": threshold,
    }
    folder = write_inputs(
        ctx.output_dir, inputs, {vid: c for vid, c in cas.items() if vid in shown}
    )
    paths = draw_run(ctx.output_dir)
    ctx.say(f"pictures: {len(paths)} PNG files in {folder}")
    return paths
