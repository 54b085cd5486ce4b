"""Greedy 1-D non-maximum suppression as done by the CoLA/FuSTAL research code.

The research code measures overlap with "pixel" lengths: a segment ``[s, e]`` in seconds has
length ``e - s + 1`` and two segments intersect over ``max(0, min(e) - max(s) + 1)``. This makes
short segments overlap far more than their plain tIoU; it is reproduced here on purpose because
the pseudo labels of METHOD.md section 3 depend on it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fustal.errors import FustalError


def segments_and_scores(
    segments: npt.ArrayLike, scores: npt.ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert ``segments [N, 2]`` and ``scores [N]`` to float64 arrays."""
    seg = np.asarray(segments, dtype=np.float64)
    sc = np.asarray(scores, dtype=np.float64)
    if seg.size == 0 and sc.size == 0:
        return seg.reshape(0, 2), sc.reshape(0)
    if seg.ndim != 2 or seg.shape[1] != 2:
        raise FustalError(f"segments: expected shape [N, 2], got {tuple(seg.shape)}")
    if sc.shape != (seg.shape[0],):
        raise FustalError(f"scores: expected shape ({seg.shape[0]},), got {tuple(sc.shape)}")
    if not (np.isfinite(seg).all() and np.isfinite(sc).all()):
        raise FustalError("segments: non-finite start, end or score")
    if (seg[:, 1] < seg[:, 0]).any():
        raise FustalError("segments: a segment ends before it starts")
    return seg, sc


def ragged_arange(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ``counts [N]``: ``(owner, offset)``, each ``[sum(counts)]``, enumerating
    ``(n, j)`` for ``j in range(counts[n])`` in order of ``n`` then ``j``."""
    owner = np.repeat(np.arange(counts.size), counts)
    block_start = np.cumsum(counts) - counts
    return owner, np.arange(owner.size) - block_start[owner]


def overlapping_pairs(
    starts: np.ndarray, ends: np.ndarray, groups: np.ndarray, thresh: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(a, b)`` of segments of the same group whose research overlap is ``>= thresh``.

    Candidates are found by a sweep over the starts sorted per group: under the ``+ 1`` rule two
    segments can only intersect when the later start is below the earlier one's end ``+ 1``
    (a generous superset is taken; the exact overlap then decides). The overlap of a pair is
    computed exactly as the research loop does, in either order (the formula is symmetric).
    """
    num = starts.size
    by_start = np.lexsort((starts, groups))
    span = float(ends.max() - starts.min()) + 4.0
    position = groups[by_start] * span + (starts[by_start] - starts.min())
    limit = position + (ends[by_start] - starts[by_start]) + 1.0 + 1e-9 * span
    first = np.arange(1, num + 1)
    counts = np.maximum(np.searchsorted(position, limit, side="right") - first, 0)
    owner, offset = ragged_arange(counts)
    a, b = by_start[owner], by_start[first[owner] + offset]
    lengths = ends - starts + 1.0
    inter = np.maximum(0.0, np.minimum(ends[a], ends[b]) - np.maximum(starts[a], starts[b]) + 1.0)
    overlap = inter / (lengths[a] + lengths[b] - inter)
    hit = overlap >= thresh
    return a[hit], b[hit]


def nms_research(
    segments: npt.ArrayLike,
    scores: npt.ArrayLike,
    thresh: float = 0.5,
    *,
    groups: npt.ArrayLike | None = None,
    tie_decimals: int | None = 10,
) -> np.ndarray:
    """Research-code NMS, exact, for many groups (classes, videos) at once.

    Args:
        segments: ``[N, 2]`` (start, end), any unit (the ``+ 1`` is added in that unit).
        scores: ``[N]``.
        thresh: a segment is suppressed when its overlap with a kept one is ``>= thresh``.
        groups: ``[N]`` int group of each segment (default: one group); segments of different
            groups never suppress each other.
        tie_decimals: scores are compared after rounding to this many decimals (``None``: raw).
            Outer-inner scores of different runs are often mathematically equal (linear
            interpolation, zero plateaus) and differ only by summation rounding; the research
            code then keeps whichever rounding favours. Rounding makes such ties exact, so the
            result does not depend on how the means were summed.

    Returns:
        ``[K]`` int64 indices of the kept segments, by group (ascending), then in the order the
        greedy procedure keeps them: descending (rounded) score, ties visited later index first,
        which is the research code's ``argsort(scores)[::-1]`` whenever numpy's default sort keeps
        ties in order.

    The research loop (keep the best remaining segment, drop every remaining one overlapping it
    by ``>= thresh``, repeat) runs once per *kept* segment. Here the same kept set comes from
    rounds over the graph of suppressing pairs (:func:`overlapping_pairs`, directed from the
    higher-ranked segment): a segment none of whose undecided higher-ranked neighbours remains
    is kept, and every neighbour it ranks above is suppressed. Each round decides at least the
    best undecided segment, and in practice a few rounds decide them all (at most 5 on the
    proposals of 20 bumpy 750-step videos).
    """
    seg, sc = segments_and_scores(segments, scores)
    num = sc.size
    grp = np.zeros(num, np.int64) if groups is None else np.asarray(groups, np.int64)
    if grp.shape != (num,):
        raise FustalError(f"groups: expected shape ({num},), got {grp.shape}")
    if num == 0:
        return np.zeros(0, np.int64)
    key = sc if tie_decimals is None else np.round(sc, tie_decimals)
    order = np.lexsort((-np.arange(num), -key, grp))
    rank = np.empty(num, np.int64)
    rank[order] = np.arange(num)
    a, b = overlapping_pairs(seg[:, 0], seg[:, 1], grp, thresh)
    high, low = np.minimum(rank[a], rank[b]), np.maximum(rank[a], rank[b])
    undecided = np.ones(num, dtype=bool)
    kept = np.zeros(num, dtype=bool)
    while undecided.any():
        blocked = np.zeros(num, dtype=bool)
        blocked[low] = True  # every remaining pair joins two undecided segments
        new = undecided & ~blocked
        kept |= new
        undecided &= ~new
        undecided[low[new[high]]] = False
        live = undecided[high] & undecided[low]
        high, low = high[live], low[live]
    return order[np.flatnonzero(kept)]
