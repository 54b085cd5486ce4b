"""ActivityNet detection mAP, vectorized.

Semantics (those of the official ActivityNet ``compute_average_precision_detection``):

- per class, predictions are ranked by score, highest first; among equal scores the later
  prediction (in input order) comes first;
- in that order each prediction takes the unmatched ground truth (GT) of the same video and
  class with the highest tIoU, if that tIoU reaches the threshold (among equal tIoUs the later
  GT wins); otherwise it is a false positive. Each GT is matched at most once per threshold;
- a prediction on a video without GT of its class (including an unknown video, index -1) is a
  false positive; predictions of classes without GT, or with a label outside ``[0, C)``, are
  ignored by the AP;
- AP is the all-point interpolated area under the precision/recall curve (precision made
  monotone from the right); classes with GT enter the mean, with AP 0 if never predicted.

The greedy matching is sequential only inside one (video, class) group. Candidate pairs
(prediction, GT) with tIoU at or above the smallest threshold are built once; the loop then runs
over the *depth* (rank of a candidate prediction within its group) and processes all groups and
all thresholds of that depth at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fustal.errors import FustalError
from fustal.segments import tiou

# the tIoU thresholds THUMOS'14 weakly-supervised papers report (METHOD.md section 1)
THUMOS_TIOU = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)

# Absolute margin (seconds) of the candidate window in ``_candidate_pairs``: covers float rounding
# of ``s - 2 L / t`` for starts up to about 1e9 s; the window only pre-selects, so any margin is
# exact.
_WINDOW_SLACK_S = 1e-6


@dataclass
class Detections:
    """A flat set of temporal segments. Ground truth has ``score=None``."""

    video: np.ndarray  # [N] int64 index into some list of video ids (-1: unknown video)
    label: np.ndarray  # [N] int64 class index
    segment: np.ndarray  # [N, 2] float64 start and end in seconds
    score: np.ndarray | None = None  # [N] float64 confidence

    def __post_init__(self) -> None:
        self.video = np.asarray(self.video, dtype=np.int64).reshape(-1)
        self.label = np.asarray(self.label, dtype=np.int64).reshape(-1)
        self.segment = np.asarray(self.segment, dtype=np.float64).reshape(-1, 2)
        n = self.video.shape[0]
        if self.label.shape[0] != n or self.segment.shape[0] != n:
            raise FustalError(
                f"detections: video, label and segment lengths differ "
                f"({n}, {self.label.shape[0]}, {self.segment.shape[0]})"
            )
        if not np.isfinite(self.segment).all():
            raise FustalError("detections: segment contains a non-finite value")
        if self.score is not None:
            self.score = np.asarray(self.score, dtype=np.float64).reshape(-1)
            if self.score.shape[0] != n:
                raise FustalError(f"detections: {self.score.shape[0]} scores for {n} segments")
            if not np.isfinite(self.score).all():
                raise FustalError("detections: score contains a non-finite value")

    def __len__(self) -> int:
        return int(self.video.shape[0])


def tiou_key(t: float) -> str:
    """Result key of a tIoU threshold: ``0.1 -> "mAP@0.1"``, ``0.55 -> "mAP@0.55"``."""
    return f"mAP@{round(float(t), 4):g}"


def check_thresholds(tiou_thresholds: Sequence[float]) -> np.ndarray:
    """Thresholds as a ``[K]`` float64 array; :class:`FustalError` if empty or outside [0, 1]."""
    thr = np.asarray(tiou_thresholds, dtype=np.float64).reshape(-1)
    if thr.size == 0:
        raise FustalError("tiou_thresholds: empty")
    if not ((thr >= 0) & (thr <= 1)).all():
        raise FustalError(f"tiou_thresholds: values must lie in [0, 1], got {thr.tolist()}")
    return thr


def check_ground_truth(gt: Detections, num_classes: int) -> None:
    """:class:`FustalError` unless GT labels lie in ``[0, C)`` and video indices are >= 0."""
    if num_classes <= 0:
        raise FustalError(f"num_classes: must be positive, got {num_classes}")
    if ((gt.label < 0) | (gt.label >= num_classes)).any():
        raise FustalError(f"ground truth: class index outside [0, {num_classes})")
    if (gt.video < 0).any():
        raise FustalError("ground truth: negative video index")


def _rank(pred: Detections) -> np.ndarray:
    """Ranking ``[N]``: class ascending, then score descending, then input index descending."""
    if pred.score is None:
        raise FustalError("predictions: scores are missing")
    index = np.arange(len(pred))
    return np.lexsort((-index, -pred.score, pred.label))


def _complex_keys(real: np.ndarray, imag: np.ndarray) -> np.ndarray:
    """``real + i*imag`` (numpy orders complex numbers lexicographically); infinities kept."""
    out = np.empty(np.broadcast(real, imag).shape, dtype=np.complex128)
    out.real = real
    out.imag = imag
    return out


def _candidate_pairs(
    gt: Detections,
    pred: Detections,
    order: np.ndarray,
    num_classes: int,
    min_tiou: float,
    max_pairs: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (ranked prediction, GT) pairs of the same video and class with tIoU >= ``min_tiou``.

    Returns ``(rank_pos [P], gt_index [P], tiou [P])`` where ``rank_pos`` indexes ``order``.
    With ``min_tiou > 0`` only GT starting in ``[s - 2 L / min_tiou - slack, e)`` can qualify
    (a GT longer than ``L / min_tiou`` cannot reach the threshold), a contiguous range once GT
    are sorted by (group, start); the exact tIoU test follows. Pairs are built in chunks of about
    ``max_pairs``.
    """
    gt_group = (gt.video * num_classes + gt.label).astype(np.float64)
    gt_sorted = np.lexsort((gt.segment[:, 0], gt_group))
    gt_keys = _complex_keys(gt_group[gt_sorted], gt.segment[gt_sorted, 0])

    video, label = pred.video[order], pred.label[order]
    pos = np.flatnonzero((video >= 0) & (label >= 0) & (label < num_classes))
    group = (video[pos] * num_classes + label[pos]).astype(np.float64)
    seg = pred.segment[order]
    start, end = seg[pos, 0], seg[pos, 1]
    if min_tiou > 0:
        lower = start - 2.0 * (end - start) / min_tiou - _WINDOW_SLACK_S
        upper = end
    else:
        lower, upper = np.full_like(start, -np.inf), np.full_like(end, np.inf)
    first = np.searchsorted(gt_keys, _complex_keys(group, lower), side="left")
    last = np.searchsorted(gt_keys, _complex_keys(group, upper), side="left")
    counts = np.maximum(last - first, 0)  # a reversed segment (end < start) has no candidates
    chunk = (np.cumsum(counts) - counts) // max_pairs
    chunk_ends = np.r_[np.flatnonzero(np.diff(chunk)) + 1, len(pos)] if len(pos) else []

    out_pos, out_gt, out_tiou = [], [], []
    lo = 0
    for hi in chunk_ends:
        c = counts[lo:hi]
        rep = np.repeat(np.arange(lo, hi), c)
        within = np.arange(len(rep)) - np.repeat(np.cumsum(c) - c, c)
        g = gt_sorted[first[rep] + within]
        t = tiou(start[rep], end[rep], gt.segment[g, 0], gt.segment[g, 1])
        keep = t >= min_tiou
        out_pos.append(pos[rep[keep]])
        out_gt.append(g[keep])
        out_tiou.append(t[keep])
        lo = hi
    if not out_pos:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float64)
    return np.concatenate(out_pos), np.concatenate(out_gt), np.concatenate(out_tiou)


def _match_ranked(
    gt: Detections,
    pred: Detections,
    thresholds: np.ndarray,
    num_classes: int,
    max_pairs: int = 1 << 22,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching of ranked predictions to GT at every threshold.

    Returns ``(order [N], tp [K, N] bool)`` where ``tp[k, i]`` says whether the prediction
    ``order[i]`` is a true positive at ``thresholds[k]``.
    """
    order = _rank(pred)
    num_thr = len(thresholds)
    tp = np.zeros((num_thr, len(pred)), dtype=bool)
    pos, gt_idx, tiou = _candidate_pairs(
        gt, pred, order, num_classes, float(thresholds.min()), max_pairs
    )
    if pos.size == 0:
        return order, tp

    # Depth of each candidate prediction inside its (video, class) group.
    cand = np.unique(pos)
    cand_key = pred.video[order[cand]] * num_classes + pred.label[order[cand]]
    by_group = np.argsort(cand_key, kind="stable")
    sorted_key = cand_key[by_group]
    starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(cand)]))
    depth_of_cand = np.empty(len(cand), dtype=np.int64)
    depth_of_cand[by_group] = np.arange(len(cand)) - run_start
    depth = depth_of_cand[np.searchsorted(cand, pos)]

    # Pairs ordered by depth, prediction, tIoU descending, GT index descending.
    pair_order = np.lexsort((-gt_idx, -tiou, pos, depth))
    pos, gt_idx, tiou, depth = (a[pair_order] for a in (pos, gt_idx, tiou, depth))
    seg_start = np.flatnonzero(np.r_[True, pos[1:] != pos[:-1]])
    seg_depth = depth[seg_start]
    num_depths = int(seg_depth[-1]) + 1
    seg_bounds = np.searchsorted(seg_depth, np.arange(num_depths + 1))
    pair_bounds = np.r_[seg_start, len(pos)][seg_bounds]

    passes = tiou[:, None] >= thresholds[None, :]
    locked = np.zeros((len(gt), num_thr), dtype=bool)
    for d in range(num_depths):
        lo, hi = pair_bounds[d], pair_bounds[d + 1]
        ok = passes[lo:hi] & ~locked[gt_idx[lo:hi]]
        rows = np.where(ok, np.arange(hi - lo)[:, None], hi - lo)
        first = np.minimum.reduceat(rows, seg_start[seg_bounds[d] : seg_bounds[d + 1]] - lo, axis=0)
        hit_seg, hit_thr = np.nonzero(first < hi - lo)
        pair = lo + first[hit_seg, hit_thr]
        locked[gt_idx[pair], hit_thr] = True
        tp[hit_thr, pos[pair]] = True
    return order, tp


def match_predictions(
    gt: Detections, pred: Detections, tiou_thresholds: Sequence[float], num_classes: int
) -> np.ndarray:
    """True-positive flags ``[K, N]`` (input order) of the class-aware greedy matching.

    Predictions with a label outside ``[0, C)`` or on a video without GT of their class are
    never true positives.
    """
    thr = check_thresholds(tiou_thresholds)
    check_ground_truth(gt, num_classes)
    order, tp_ranked = _match_ranked(gt, pred, thr, num_classes)
    tp = np.zeros_like(tp_ranked)
    tp[:, order] = tp_ranked
    return tp


def _interpolated_ap(tp: np.ndarray, num_positives: int) -> np.ndarray:
    """All-point interpolated AP of ranked flags ``tp [K, n]`` -> ``[K]``."""
    tp_cum = np.cumsum(tp, axis=1, dtype=np.float64)
    precision = tp_cum / np.arange(1, tp.shape[1] + 1)
    recall = tp_cum / num_positives
    envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    recall_step = np.diff(recall, axis=1, prepend=0.0)
    return (recall_step * envelope).sum(axis=1)


def average_precision(
    gt: Detections, pred: Detections, tiou_thresholds: Sequence[float], num_classes: int
) -> np.ndarray:
    """Per-threshold, per-class AP ``[K, C]`` (NaN for classes without GT) of ``pred`` (with
    scores; ``gt``'s video indexing, -1: unknown video) against ``gt`` (score ignored; labels in
    ``[0, C)``, video indices >= 0) at ``K`` thresholds in ``[0, 1]``."""
    thr = check_thresholds(tiou_thresholds)
    check_ground_truth(gt, num_classes)
    num_positives = np.bincount(gt.label, minlength=num_classes)
    ap = np.full((len(thr), num_classes), np.nan)
    ap[:, num_positives > 0] = 0.0
    if pred.score is None:
        raise FustalError("predictions: scores are missing")
    keep = np.flatnonzero((pred.label >= 0) & (pred.label < num_classes))
    keep = keep[num_positives[pred.label[keep]] > 0]
    sub = Detections(pred.video[keep], pred.label[keep], pred.segment[keep], pred.score[keep])
    order, tp = _match_ranked(gt, sub, thr, num_classes)
    ranked_label = sub.label[order]
    classes = np.unique(ranked_label)
    bounds = np.searchsorted(ranked_label, np.r_[classes, num_classes]).reshape(-1)
    for i, c in enumerate(classes):
        ap[:, c] = _interpolated_ap(tp[:, bounds[i] : bounds[i + 1]], int(num_positives[c]))
    return ap


def detection_map(
    gt: Detections, pred: Detections, tiou_thresholds: Sequence[float], num_classes: int
) -> dict[str, float]:
    """Mean AP over classes with GT, per threshold, and their mean.

    Returns ``{tiou_key(t): mAP for each t, "avg": mean}``, python floats in ``[0, 1]``.
    """
    if len(gt) == 0:
        raise FustalError("ground truth: no segments to evaluate against")
    ap = average_precision(gt, pred, tiou_thresholds, num_classes)
    per_thr = np.nanmean(ap, axis=1)
    result = {tiou_key(t): float(m) for t, m in zip(tiou_thresholds, per_thr, strict=True)}
    result["avg"] = float(per_thr.mean())
    return result
