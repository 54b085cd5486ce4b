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
from fustal.metrics.results import VideoDetections, score_rows
from fustal.metrics.shape import VIDEO_MAP, sections


def video_map(scores: Mapping[str, np.ndarray], videos: Sequence[Video], num_classes: int) -> float:
    """Video-level classification mAP: :func:`classes_map` of ``scores`` (``{video_id: [C]}``; a
    video without scores counts as all zeros) against the videos' multi-hot labels."""
    labels = np.stack([v.video_label(num_classes) for v in videos])
    zeros = np.zeros(num_classes)
    preds = np.stack([np.asarray(scores.get(v.id, zeros), np.float64) for v in videos])
    return classes_map(preds, labels)


def classes_map(preds: np.ndarray, labels: np.ndarray) -> float:
    """The mean over the classes present in ``labels`` (``[N, C]`` multi-hot) of the average
    precision of ``preds`` (``[N, C]`` scores). Classes no video has are left out (their AP is
    undefined)."""
    targets = np.asarray(labels).astype(np.int64)
    present = np.flatnonzero(targets.sum(0) > 0)
    ap = [
        binary_average_precision(
            torch.from_numpy(np.asarray(preds[:, c], np.float64)), torch.from_numpy(targets[:, c])
        )
        for c in present
    ]
    return float(torch.stack(ap).mean())


def best_class_scores(rows: np.ndarray, num_classes: int) -> np.ndarray:
    """A detector's video-level class scores of one video: ``[C]``, the highest score of its
    detections ``rows`` (``[K, 4]``: class, score, start_s, end_s) of each class (0 where it has
    none)."""
    scores = np.zeros(num_classes)
    if len(rows):
        np.maximum.at(scores, rows[:, 0].astype(np.int64), rows[:, 1])
    return scores


def detection_video_scores(rows: VideoDetections, num_classes: int) -> dict[str, np.ndarray]:
    """:func:`best_class_scores` of every video of ``rows``."""
    return {vid: best_class_scores(dets, num_classes) for vid, dets in rows.items()}


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


def without_val(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A stage's metrics by section without its ``<model>.val`` ones: what its cache entry's
    ``metrics.json`` keeps (they are scored in each run, as its ``validation.mode`` asks)."""
    return {k: v for k, v in sections(metrics).items() if not k.endswith(".val")}
