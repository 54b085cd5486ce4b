"""Quality of a pseudo-label set against the ground truth of the same (training) videos."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fustal.data.annotations import Video
from fustal.metrics.detection import Detections, detection_map, match_predictions
from fustal.metrics.results import gt_to_detections, rows_to_detections


def precision_recall(
    gt: Detections, pred: Detections, tiou_thresholds: Sequence[float], num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Precision (matched predictions / all predictions) and recall (matched GT / all GT)
    ``[K]`` at each threshold, of the class-aware greedy one-to-one matching of
    :func:`~fustal.metrics.detection.match_predictions`; 0 when there are no predictions or no
    ground truth."""
    matched = match_predictions(gt, pred, tiou_thresholds, num_classes).sum(axis=1)
    precision = matched / len(pred) if len(pred) else np.zeros(matched.shape)
    recall = matched / len(gt) if len(gt) else np.zeros(matched.shape)
    return precision.astype(np.float64), recall.astype(np.float64)


def pseudo_label_quality(
    gt: Detections,
    pred: Detections,
    num_classes: int,
    tiou_thresholds: Sequence[float],
    match_tiou: float = 0.5,
) -> dict:
    """Count, precision, recall and detection mAP of pseudo labels ``pred``.

    Precision and recall: :func:`precision_recall` at ``match_tiou``.
    Raises :class:`FustalError` when ``gt`` is empty.

    Returns ``{"count": int, f"precision@{match_tiou:g}": float, f"recall@{match_tiou:g}": float,
    "avg": float, "mAP@t": float for each threshold}``.
    """
    maps = detection_map(gt, pred, tiou_thresholds, num_classes)
    precision, recall = precision_recall(gt, pred, [match_tiou], num_classes)
    key = f"{round(float(match_tiou), 4):g}"
    out: dict = {
        "count": len(pred),
        f"precision@{key}": float(precision[0]),
        f"recall@{key}": float(recall[0]),
        "avg": maps.pop("avg"),
    }
    out.update(maps)
    return out


def rows_quality(
    rows: Mapping[str, np.ndarray],
    videos: Sequence[Video],
    num_classes: int,
    tiou_thresholds: Sequence[float],
) -> dict:
    """:func:`pseudo_label_quality` of per-video rows against the ground truth of ``videos``."""
    gt, video_ids = gt_to_detections(videos)
    pred = rows_to_detections(rows, video_ids)
    return pseudo_label_quality(gt, pred, num_classes, tiou_thresholds)


# what the held-out choice of a filter's parameters maximizes (pseudo_labels.filter_choice)
CHOICE_METRIC = "f1@0.5"


def filter_choice(
    candidates: Sequence[Mapping[str, np.ndarray]], videos: Sequence[Video], num_classes: int
) -> tuple[int, list[float]]:
    """The index of the best of ``candidates`` (per-video rows kept by each setting of a filter,
    on the held-out ``videos``) by :data:`CHOICE_METRIC`, the F1 of their precision and recall
    at tIoU 0.5 against the videos' segments (the first of equal ones), and every candidate's
    value."""
    gt, video_ids = gt_to_detections(videos)
    scores = []
    for rows in candidates:
        pred = rows_to_detections(rows, video_ids)
        precision, recall = (float(x[0]) for x in precision_recall(gt, pred, [0.5], num_classes))
        total = precision + recall
        scores.append(2 * precision * recall / total if total else 0.0)
    return int(np.argmax(scores)), scores
