"""Straightforward loop transcription of the research proposal procedure (METHOD.md section 3).

Used by tests and scripts/bench_proposals.py as the ground truth for
:func:`fustal.pseudo.proposals.cas_to_proposals`. Deliberately plain: Python loops over classes,
thresholds, groups and proposal pairs, ``np.mean`` over explicit index lists, ``interp1d`` for the
upsampling, and a pairwise NMS.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.interpolate import interp1d

CAS_THRESHOLDS = tuple(np.arange(0.0, 0.25, 0.025).tolist())
ACTIONNESS_THRESHOLDS = tuple(np.arange(0.1, 0.925, 0.025).tolist())


def minmax_norm_loop(x: np.ndarray) -> np.ndarray:
    """Per-column relu'd min-max normalization of ``x [T, K]``, clipped to [0, 1]."""
    out = np.zeros_like(x)
    for k in range(x.shape[1]):
        low = max(float(x[:, k].min()), 0.0)
        high = max(float(x[:, k].max()), 0.0)
        span = high - low
        if span <= 0:
            span = 1.0
        for t in range(x.shape[0]):
            out[t, k] = min(max((x[t, k] - low) / span, 0.0), 1.0)
    return out


def upsample_loop(x: np.ndarray, upscale: int) -> np.ndarray:
    """``interp1d`` with extrapolation at ``arange(0, T, 1 / upscale)``; one sample is repeated."""
    grid = np.arange(0, x.shape[0], 1 / upscale)
    if x.shape[0] == 1:
        return np.repeat(x, grid.size, axis=0)
    f = interp1d(np.arange(x.shape[0]), x, kind="linear", axis=0, fill_value="extrapolate")
    return f(grid)


def group_consecutive(indices: np.ndarray) -> list[list[int]]:
    """Split sorted indices into lists of consecutive integers."""
    groups: list[list[int]] = []
    for idx in indices.tolist():
        if groups and idx == groups[-1][-1] + 1:
            groups[-1].append(idx)
        else:
            groups.append([idx])
    return groups


def oic_proposals_loop(
    positive: np.ndarray,
    values: np.ndarray,
    class_index: int,
    video_score: float,
    step_s: float,
    oic_lambda: float,
    oic_gamma: float,
    min_length: int,
) -> list[list[float]]:
    """Proposals ``[class, score, start, end]`` of one class at one threshold.

    ``positive [L]`` selects steps; ``values [L]`` is what inner/outer means read.
    """
    indices = np.where(positive)[0]
    proposals: list[list[float]] = []
    if not indices.any():
        return proposals
    last_step = values.shape[0] - 1
    for group in group_consecutive(indices):
        if len(group) < min_length:
            continue
        inner = np.mean(values[group])
        outer_start = max(0, int(group[0] - oic_lambda * len(group)))
        outer_end = min(last_step, int(group[-1] + oic_lambda * len(group)))
        outer_idx = list(range(outer_start, group[0])) + list(range(group[-1] + 1, outer_end + 1))
        outer = np.mean(values[outer_idx]) if outer_idx else 0.0
        score = inner - outer + oic_gamma * video_score
        proposals.append([class_index, score, group[0] * step_s, (group[-1] + 1) * step_s])
    return proposals


def nms_loop(
    proposals: list[list[float]], thresh: float, tie_decimals: int | None = 10
) -> list[list[float]]:
    """Pairwise research NMS (``+ 1`` lengths) over ``[class, score, start, end]`` rows.

    Visiting order: descending score rounded to ``tie_decimals``, ties later row first.
    """
    scores = [
        p[1] if tie_decimals is None else float(np.round(p[1], tie_decimals)) for p in proposals
    ]
    order = sorted(range(len(proposals)), key=lambda i: (scores[i], i), reverse=True)
    suppressed = [False] * len(proposals)
    kept = []
    for pos, i in enumerate(order):
        if suppressed[i]:
            continue
        kept.append(proposals[i])
        s_i, e_i = proposals[i][2], proposals[i][3]
        for j in order[pos + 1 :]:
            if suppressed[j]:
                continue
            s_j, e_j = proposals[j][2], proposals[j][3]
            inter = max(0.0, min(e_i, e_j) - max(s_i, s_j) + 1.0)
            union = (e_i - s_i + 1.0) + (e_j - s_j + 1.0) - inter
            if inter / union >= thresh:
                suppressed[j] = True
    return kept


def cas_to_proposals_loop(
    cas: np.ndarray,
    actionness: np.ndarray,
    video_scores: np.ndarray,
    seconds_per_step: float,
    *,
    class_thresh: float = 0.2,
    cas_thresholds: Sequence[float] = CAS_THRESHOLDS,
    actionness_thresholds: Sequence[float] = ACTIONNESS_THRESHOLDS,
    upscale: int = 24,
    nms_thresh: float = 0.5,
    oic_lambda: float = 0.25,
    oic_gamma: float = 0.2,
    min_length: int = 2,
) -> np.ndarray:
    """Loop version of :func:`fustal.pseudo.proposals.cas_to_proposals`; same output layout."""
    cas = np.asarray(cas, dtype=np.float64)
    actionness = np.asarray(actionness, dtype=np.float64)
    video_scores = np.asarray(video_scores, dtype=np.float64)
    if cas.shape[0] == 0:
        return np.zeros((0, 4))
    classes = [c for c in range(video_scores.shape[0]) if video_scores[c] >= class_thresh]
    if not classes:
        classes = [int(np.argmax(video_scores))]
    cas_up = upsample_loop(minmax_norm_loop(cas)[:, classes], upscale)
    act_up = upsample_loop(minmax_norm_loop(actionness[:, None]), upscale)[:, 0]
    step_s = seconds_per_step / upscale

    per_class: dict[int, list[list[float]]] = {c: [] for c in classes}
    for th in cas_thresholds:
        for k, c in enumerate(classes):
            values = cas_up[:, k].copy()
            values[values < th] = 0
            per_class[c] += oic_proposals_loop(
                values > 0, values, c, video_scores[c], step_s, oic_lambda, oic_gamma, min_length
            )
    for th in actionness_thresholds:
        act = act_up.copy()
        act[act < th] = 0
        for k, c in enumerate(classes):
            per_class[c] += oic_proposals_loop(
                act > 0, cas_up[:, k], c, video_scores[c], step_s, oic_lambda, oic_gamma, min_length
            )

    rows = []
    for c in classes:
        if per_class[c]:
            rows += nms_loop(per_class[c], nms_thresh)
    return np.array(rows, dtype=np.float64).reshape(-1, 4)
