"""Selection stage: the prior-based pseudo-label filter of METHOD.md section 4.

Around a true action the generator produces many overlapping proposals (one per threshold);
false ones tend to be isolated. Per video and regardless of class, a proposal's *overlap density*
is the sum of its tIoU with every other proposal; a pseudo label is kept when its density is
``>= min_density`` and its score ``> min_score``. Either criterion can be switched off with
``None``, which gives the filter modes (``conf/filter/*.yaml``, each naming
:func:`prior_filter` by ``_target_``; ``keep_best`` keeps a video's best pseudo labels when the
thresholds remove all of them)

=========  ===============  ===========
mode       ``min_density``  ``min_score``
=========  ===============  ===========
fustal     0.2              0.4
score      None             0.4
density    0.2              None
none       None             None
=========  ===============  ===========

A filter is any function ``keep(rows, **params) -> kept rows`` of one video's pseudo labels,
``[K, 4]`` rows (class index, score, start s, end s) in, ``[K', 4]`` rows out; the ``filter``
config group names it by ``_target_`` (a user's own: ``filter._target_=my_filters.keep_long``,
docs/extending.md) and :func:`filter_rows` applies it to every video.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import numpy.typing as npt

from fustal.pseudo.nms import segments_and_scores
from fustal.segments import tiou_matrix


def overlap_density(segments: np.ndarray) -> np.ndarray:
    """Row sums of the tIoU matrix of ``segments [N, 2]`` without its diagonal: ``[N]``."""
    tiou = tiou_matrix(segments, segments)
    np.fill_diagonal(tiou, 0.0)
    return tiou.sum(axis=1)


def iou_density_mask(
    segments: npt.ArrayLike,
    scores: npt.ArrayLike,
    min_density: float | None = 0.2,
    min_score: float | None = 0.4,
) -> np.ndarray:
    """Which of one video's proposals (``segments [N, 2]``, any class, and ``scores [N]``)
    survive the filter: ``[N]`` bool, true where ``overlap_density >= min_density`` and
    ``score > min_score`` (``None`` disables a test)."""
    seg, sc = segments_and_scores(segments, scores)
    keep = np.ones(seg.shape[0], dtype=bool)
    if seg.shape[0] == 0:
        return keep
    if min_density is not None:
        keep &= overlap_density(seg) >= min_density
    if min_score is not None:
        keep &= sc > min_score
    return keep


def prior_filter(
    rows: np.ndarray,
    min_density: float | None = 0.2,
    min_score: float | None = 0.4,
    keep_best: int = 0,
) -> np.ndarray:
    """FuSTAL's prior-based filter of one video: the rows ``[K, 4]`` (class, score, start,
    end) that :func:`iou_density_mask` keeps, in order. A video it leaves without any keeps its
    ``keep_best`` highest-scoring rows instead (0: none, METHOD.md section 4; its video label
    says it holds an action, which no pseudo label at all would teach as background)."""
    rows = np.asarray(rows, np.float64).reshape(-1, 4)
    kept = rows[iou_density_mask(rows[:, 2:4], rows[:, 1], min_density, min_score)]
    if len(kept) or not keep_best:
        return kept
    return rows[np.sort(np.argsort(-rows[:, 1], kind="stable")[:keep_best])]


RowFilter = Callable[[np.ndarray], np.ndarray]


def filter_rows(
    rows: Mapping[str, np.ndarray], keep: RowFilter, name: str = "filter"
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Apply the filter ``keep`` (one video's ``[K, 4]`` rows in, kept rows out) to every video.

    Args:
        rows: ``{video_id: [K, 4] rows (class_index, score, start_s, end_s)}``.
        keep: e.g. ``functools.partial(prior_filter, min_density=0.2, min_score=0.4)``.
        name: how errors name the filter.

    Returns:
        ``(filtered, stats)``: the kept rows of every video (a video left without any keeps an
        empty ``[0, 4]``), and ``{"videos", "before", "after", "videos_without_labels"}``
        (counts; the last after filtering).

    Raises:
        ValueError: ``keep`` returned something that is not ``[K', 4]`` rows with
        ``K' <= K``, naming the filter and the video.
    """
    filtered: dict[str, np.ndarray] = {}
    for vid, video_rows in rows.items():
        video_rows = np.asarray(video_rows, np.float64).reshape(-1, 4)
        kept = np.asarray(keep(video_rows.copy()), np.float64)
        if kept.size == 0:
            kept = kept.reshape(0, 4)
        if kept.ndim != 2 or kept.shape[1] != 4 or len(kept) > len(video_rows):
            raise ValueError(
                f"{name}: video {vid}: returned an array of shape {kept.shape} for"
                f" {len(video_rows)} pseudo labels; expected [K', 4] rows with K' <="
                f" {len(video_rows)}"
            )
        filtered[vid] = kept
    stats = {
        "videos": len(rows),
        "before": int(sum(len(r) for r in rows.values())),
        "after": int(sum(len(r) for r in filtered.values())),
        "videos_without_labels": sum(1 for r in filtered.values() if len(r) == 0),
    }
    return filtered, stats
