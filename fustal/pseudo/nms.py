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


def nms_research(
    segments: npt.ArrayLike,
    scores: npt.ArrayLike,
    thresh: float = 0.5,
    *,
    tie_decimals: int | None = 10,
) -> np.ndarray:
    """Research-code NMS: indices of the kept segments, highest score first.

    Args:
        segments: ``[N, 2]`` (start, end), any unit (the ``+ 1`` is added in that unit).
        scores: ``[N]``.
        thresh: a segment is suppressed when its overlap with a kept one is ``>= thresh``.
        tie_decimals: scores are compared after rounding to this many decimals (``None``: raw).
            Outer-inner scores of different runs are often mathematically equal (linear
            interpolation, zero plateaus) and differ only by summation rounding; the research
            code then keeps whichever rounding favours. Rounding makes such ties exact, so the
            result does not depend on how the means were summed.

    Returns:
        ``[K]`` int64 indices into ``segments``, in the order they were kept: descending
        (rounded) score, ties visited later index first, which is the research code's
        ``argsort(scores)[::-1]`` whenever numpy's default sort keeps ties in order. The loop
        runs once per *kept* segment; each pass is vectorized over the remaining ones.
    """
    seg, sc = segments_and_scores(segments, scores)
    starts, ends = seg[:, 0], seg[:, 1]
    lengths = ends - starts + 1.0
    key = sc if tie_decimals is None else np.round(sc, tie_decimals)
    order = np.argsort(key, kind="stable")[::-1]
    kept: list[int] = []
    while order.size:
        top, rest = order[0], order[1:]
        kept.append(int(top))
        inter = np.maximum(
            0.0, np.minimum(ends[top], ends[rest]) - np.maximum(starts[top], starts[rest]) + 1.0
        )
        overlap = inter / (lengths[top] + lengths[rest] - inter)
        order = rest[overlap < thresh]
    return np.asarray(kept, dtype=np.int64)
