"""Selection stage: the prior-based pseudo-label filter of METHOD.md section 4.

Around a true action the generator produces many overlapping proposals (one per threshold);
false ones tend to be isolated. Per video and regardless of class, a proposal's *overlap density*
is the sum of its tIoU with every other proposal; a pseudo label is kept when its density is
``>= min_density`` and its score ``> min_score``. Either criterion can be switched off with
``None``, which gives the filter modes

=========  ===============  ===========
mode       ``min_density``  ``min_score``
=========  ===============  ===========
fustal     0.2              0.4
score      None             0.4
density    0.2              None
none       None             None
=========  ===============  ===========
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from fustal.errors import FustalError
from fustal.pseudo.nms import segments_and_scores


def pairwise_tiou(segments: np.ndarray) -> np.ndarray:
    """Plain temporal IoU of every pair of ``segments [N, 2]``: ``[N, N]``.

    Pairs whose union is empty (two zero-length segments at one point) have IoU 0.
    """
    starts, ends = segments[:, 0], segments[:, 1]
    inter = np.maximum(
        0.0, np.minimum(ends[:, None], ends[None, :]) - np.maximum(starts[:, None], starts[None, :])
    )
    lengths = ends - starts
    union = lengths[:, None] + lengths[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def overlap_density(segments: np.ndarray) -> np.ndarray:
    """Row sums of the tIoU matrix of ``segments [N, 2]`` without its diagonal: ``[N]``."""
    tiou = pairwise_tiou(segments)
    np.fill_diagonal(tiou, 0.0)
    return tiou.sum(axis=1)


def iou_density_mask(
    segments: npt.ArrayLike,
    scores: npt.ArrayLike,
    min_density: float | None = 0.2,
    min_score: float | None = 0.4,
) -> np.ndarray:
    """Which pseudo labels of one video survive the filter.

    Args:
        segments: ``[N, 2]`` (start, end) of all the video's proposals, any class.
        scores: ``[N]``.
        min_density: keep ``overlap_density >= min_density``; ``None`` disables it.
        min_score: keep ``score > min_score``; ``None`` disables it.

    Returns:
        ``[N]`` bool (``[0]`` for no proposals).
    """
    seg, sc = segments_and_scores(segments, scores)
    keep = np.ones(seg.shape[0], dtype=bool)
    if seg.shape[0] == 0:
        return keep
    if min_density is not None:
        keep &= overlap_density(seg) >= min_density
    if min_score is not None:
        keep &= sc > min_score
    return keep


def _is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _video_arrays(vid: str, entries: Any) -> tuple[np.ndarray, np.ndarray]:
    """``segments [N, 2]`` and ``scores [N]`` of one video's result entries, validated."""
    if not isinstance(entries, list):
        raise FustalError(f"results/{vid}: expected a list of predictions")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise FustalError(f"results/{vid}[{i}]: expected an object")
        segment, score = entry.get("segment"), entry.get("score")
        if not (isinstance(segment, list | tuple) and len(segment) == 2):
            raise FustalError(f"results/{vid}[{i}]: 'segment' must be [start, end]")
        if not (all(_is_number(v) for v in segment) and _is_number(score)):
            raise FustalError(f"results/{vid}[{i}]: 'segment' and 'score' must be finite numbers")
        if segment[1] < segment[0]:
            raise FustalError(f"results/{vid}[{i}]: segment ends before it starts")
    segments = np.array([e["segment"] for e in entries], dtype=np.float64).reshape(-1, 2)
    scores = np.array([e["score"] for e in entries], dtype=np.float64)
    return segments, scores


def filter_results(
    results: dict, min_density: float | None, min_score: float | None
) -> tuple[dict, dict]:
    """Apply :func:`iou_density_mask` to every video of an ActivityNet results dict.

    Args:
        results: ``{"results": {vid: [{"label", "score", "segment"}, ...]}, ...}``.
        min_density, min_score: as in :func:`iou_density_mask`.

    Returns:
        ``(filtered, stats)``: ``filtered`` is ``results`` with each video's list replaced by the
        surviving entries (the same entry objects, order kept; other top-level keys kept; every
        video kept, even with an empty list); ``stats`` is ``{"videos", "before", "after",
        "videos_without_labels"}`` (counts; the last after filtering).
    """
    videos = results.get("results") if isinstance(results, dict) else None
    if not isinstance(videos, dict):
        raise FustalError("results: expected an object with a 'results' mapping of videos")
    filtered: dict[str, list] = {}
    before = after = empty = 0
    for vid, entries in videos.items():
        segments, scores = _video_arrays(vid, entries)
        mask = iou_density_mask(segments, scores, min_density, min_score)
        filtered[vid] = [entry for entry, keep in zip(entries, mask, strict=True) if keep]
        before += len(entries)
        after += len(filtered[vid])
        empty += not filtered[vid]
    stats = {
        "videos": len(videos),
        "before": before,
        "after": after,
        "videos_without_labels": empty,
    }
    return {**results, "results": filtered}, stats
