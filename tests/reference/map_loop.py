"""Straightforward per-class, per-prediction loop for detection AP (test/benchmark reference).

Follows the structure of the official ActivityNet ``compute_average_precision_detection``:
predictions of one class ranked by score (stable, later prediction first among ties), each one
walks the GT of its video and class in decreasing tIoU (later GT first among ties) and takes the
first unmatched one above the threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fustal.metrics.detection import Detections


def segment_iou_loop(target: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """tIoU of one segment ``[2]`` with each of ``[M, 2]`` candidates (0 for an empty union)."""
    out = np.zeros(len(candidates))
    for j, (s, e) in enumerate(candidates):
        inter = max(0.0, min(target[1], e) - max(target[0], s))
        union = (target[1] - target[0]) + (e - s) - inter
        out[j] = inter / union if union > 0 else 0.0
    return out


def interpolated_prec_rec_loop(prec: np.ndarray, rec: np.ndarray) -> float:
    """All-point interpolated AP (the official ``interpolated_prec_rec``)."""
    mprec = np.hstack([[0.0], prec, [0.0]])
    mrec = np.hstack([[0.0], rec, [1.0]])
    for i in range(len(mprec) - 2, -1, -1):
        mprec[i] = max(mprec[i], mprec[i + 1])
    idx = np.where(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def class_ap_loop(
    gt_video: np.ndarray,
    gt_segment: np.ndarray,
    pred_video: np.ndarray,
    pred_segment: np.ndarray,
    pred_score: np.ndarray,
    thresholds: np.ndarray,
) -> np.ndarray:
    """AP ``[K]`` of one class from its GT and predictions."""
    num_thr = len(thresholds)
    if len(pred_score) == 0:
        return np.zeros(num_thr)
    gt_by_video: dict[int, list[int]] = {}
    for j, v in enumerate(gt_video):
        gt_by_video.setdefault(int(v), []).append(j)
    lock = -np.ones((num_thr, len(gt_video)), dtype=np.int64)
    order = np.argsort(pred_score, kind="stable")[::-1]
    tp = np.zeros((num_thr, len(order)))
    fp = np.zeros((num_thr, len(order)))
    for rank, idx in enumerate(order):
        members = gt_by_video.get(int(pred_video[idx]))
        if members is None:
            fp[:, rank] = 1
            continue
        tiou = segment_iou_loop(pred_segment[idx], gt_segment[members])
        by_tiou = np.argsort(tiou, kind="stable")[::-1]
        for k, thr in enumerate(thresholds):
            for j in by_tiou:
                if tiou[j] < thr:
                    break
                if lock[k, members[j]] >= 0:
                    continue
                tp[k, rank] = 1
                lock[k, members[j]] = idx
                break
            if tp[k, rank] == 0:
                fp[k, rank] = 1
    tp_cum = np.cumsum(tp, axis=1)
    fp_cum = np.cumsum(fp, axis=1)
    recall = tp_cum / len(gt_video)
    precision = tp_cum / (tp_cum + fp_cum)
    return np.array([interpolated_prec_rec_loop(precision[k], recall[k]) for k in range(num_thr)])


def average_precision_loop(
    gt: Detections, pred: Detections, tiou_thresholds: Sequence[float], num_classes: int
) -> np.ndarray:
    """Per-threshold, per-class AP ``[K, C]``; NaN for classes without GT."""
    thresholds = np.asarray(tiou_thresholds, dtype=np.float64)
    ap = np.full((len(thresholds), num_classes), np.nan)
    for c in range(num_classes):
        g = gt.label == c
        if not g.any():
            continue
        p = pred.label == c
        ap[:, c] = class_ap_loop(
            gt.video[g], gt.segment[g], pred.video[p], pred.segment[p], pred.score[p], thresholds
        )
    return ap


def detection_map_loop(
    gt: Detections, pred: Detections, tiou_thresholds: Sequence[float], num_classes: int
) -> dict[str, float]:
    """mAP per threshold (keys as ``fustal.metrics.detection.tiou_key``) and ``"avg"``."""
    ap = average_precision_loop(gt, pred, tiou_thresholds, num_classes)
    per_thr = np.nanmean(ap, axis=1)
    out = {
        f"mAP@{round(float(t), 4):g}": float(m)
        for t, m in zip(tiou_thresholds, per_thr, strict=True)
    }
    out["avg"] = float(per_thr.mean())
    return out
