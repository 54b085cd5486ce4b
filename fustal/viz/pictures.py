"""The run's pictures (``RUN_DIR/pictures/``), drawn from the stages' outputs in memory: a timeline
per shown training video (ground truth, the generator's CAS, raw and filtered pseudo labels, the
student's detections) and per shown test video (ground truth, the CAS, the generator's and the
student's detections), and the pseudo labels' precision/recall over tIoU."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fustal.data.annotations import Video
from fustal.data.dataset import StageData
from fustal.metrics.results import (
    VideoDetections,
    gt_to_detections,
    row_entries,
    rows_to_detections,
)
from fustal.viz.pr import pr_summary
from fustal.viz.rundir import draw_run, segment_entries, write_inputs


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
                name: row_entries(per_video.get(video.id, np.zeros((0, 4))), classes, video.id)
                for name, per_video in tracks.items()
            },
        },
    }


@dataclass
class RunPictures:
    """What the pictures of a run show, from its stages' outputs (empty: that stage did not
    run): the pseudo-label sets compared with the training ground truth (``raw``,
    ``filtered``), the named detection tracks of the training and test videos, the CAS."""

    pseudo: dict[str, VideoDetections] = field(default_factory=dict)
    train_tracks: dict[str, VideoDetections] = field(default_factory=dict)
    test_tracks: dict[str, VideoDetections] = field(default_factory=dict)
    cas: dict[str, dict[str, Any]] = field(default_factory=dict)


def make_pictures(
    run_dir: Path,
    data: StageData,
    videos: tuple[list[Video], list[Video]],
    shown: RunPictures,
    score_threshold: float | None,
) -> list[Path]:
    """Write the picture inputs of the training and test ``videos`` and draw the PNGs into
    ``run_dir/pictures`` (the score colour bar marks ``score_threshold``, if any); returns their
    paths."""
    classes = data.classes
    entries = [video_entry(v, "train", shown.train_tracks, classes) for v in videos[0]] + [
        video_entry(v, "test", shown.test_tracks, classes) for v in videos[1]
    ]
    ids = {v["id"] for v in entries}
    pr = None
    if shown.pseudo:
        gt, video_ids = gt_to_detections(data.train_videos())
        preds = {name: rows_to_detections(rows, video_ids) for name, rows in shown.pseudo.items()}
        pr = pr_summary(gt, preds, len(classes))
    inputs = {
        "classes": classes,
        "videos": entries,
        "pseudo_label_pr": pr,
        "score_threshold": score_threshold,
    }
    write_inputs(run_dir, inputs, {vid: c for vid, c in shown.cas.items() if vid in ids})
    return draw_run(run_dir)
