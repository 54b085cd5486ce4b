"""The ``val`` metrics of ``validation=heldout|video_labels``: what a model scores on the held-out
training videos, with their segment annotations (``heldout``) or their video-level labels only
(``video_labels``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics.functional.classification import binary_average_precision

from fustal.data.annotations import Video
from fustal.metrics.quality import score_rows
from fustal.metrics.results import VideoDetections

# the val key of the video-level classification mAP
VIDEO_MAP = "video_map"


def video_map(scores: Mapping[str, np.ndarray], videos: Sequence[Video], num_classes: int) -> float:
    """Video-level classification mAP: the mean over the classes present in ``videos`` of the
    average precision of ``scores`` (``{video_id: [C]}``; a video without scores counts as all
    zeros) against the videos' multi-hot labels. Classes no video has are left out (their AP is
    undefined)."""
    labels = np.stack([v.video_label(num_classes) for v in videos]).astype(np.int64)
    zeros = np.zeros(num_classes)
    preds = np.stack([np.asarray(scores.get(v.id, zeros), np.float64) for v in videos])
    present = np.flatnonzero(labels.sum(0) > 0)
    ap = [
        binary_average_precision(torch.from_numpy(preds[:, c]), torch.from_numpy(labels[:, c]))
        for c in present
    ]
    return float(torch.stack(ap).mean())


def detection_video_scores(rows: VideoDetections, num_classes: int) -> dict[str, np.ndarray]:
    """A detector's video-level class scores: per video ``[C]``, the highest score of its
    detections of each class (0 where it has none). ``rows``: per video ``[K, 4]`` rows
    ``(class, score, start_s, end_s)``."""
    out = {}
    for vid, dets in rows.items():
        scores = np.zeros(num_classes)
        if len(dets):
            np.maximum.at(scores, dets[:, 0].astype(np.int64), dets[:, 1])
        out[vid] = scores
    return out


def val_metrics(
    mode: str,
    rows: VideoDetections,
    videos: Sequence[Video],
    num_classes: int,
    tiou_thresholds: Sequence[float],
    video_scores: Mapping[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """The ``val`` metrics of a model's detections ``rows`` on the held-out ``videos``:
    ``video_map`` (of ``video_scores``, the model's own video-level scores, or else of
    :func:`detection_video_scores`), and with ``mode="heldout"`` the detection mAP per tIoU and
    its ``avg`` too."""
    scores = detection_video_scores(rows, num_classes) if video_scores is None else video_scores
    out = {VIDEO_MAP: video_map(scores, videos, num_classes)}
    if mode == "heldout":
        out.update(score_rows(rows, videos, num_classes, tiou_thresholds))
    return out


def without_val(metrics: dict[str, Any]) -> dict[str, Any]:
    """A stage's metrics without its ``<model>.val`` entries (what its cache entry keeps: they
    are scored in each run, as the run's ``validation.mode`` asks)."""
    return {k: v for k, v in metrics.items() if not k.endswith(".val")}
