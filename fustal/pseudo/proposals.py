"""Proposals (pseudo labels) from a class activation sequence: METHOD.md section 3.

The procedure reproduces the CoLA/FuSTAL research code up to float rounding, vectorized over
thresholds, classes and time steps (``tests/reference/proposals_loop.py`` is the loop version it is
tested against):

1. predicted classes: ``video_scores >= class_thresh``, else the argmax;
2. per-class min-max normalization (relu'd min/max, a non-positive range becomes 1, clip [0, 1]);
3. linear upsampling by ``upscale`` with extrapolation past the last sample (evaluated at
   ``arange(0, T, 1 / upscale)``, bit-identical to ``scipy.interpolate.interp1d``);
4. for every threshold, runs of consecutive positive steps of at least ``min_length`` steps,
   scored by outer-inner contrast. Runs for all thresholds come from one pass over the sequence
   (:func:`threshold_runs`); the inner and outer means are range sums with ``np.add.reduceat``
   over the thresholded CAS rows (CAS thresholds) or the raw CAS rows (actionness thresholds);
5. class-wise research NMS (:func:`fustal.pseudo.nms.nms_research`, all classes in one call).
   Scores that agree to 10 decimals are treated as ties (the later proposal in research order
   is visited first): different runs often have mathematically equal scores (linear
   interpolation, zero plateaus) and the research code then keeps whichever one summation
   rounding favours, so no implementation can match it there except by a fixed tie rule.

Research-code details kept on purpose:

* the outer region is ``[max(0, int(g0 - lambda * L)), g0)`` on the left and
  ``(g1, min(N' - 1, int(g1 + lambda * L))]`` on the right (``N'`` the upsampled length), so the
  left side spans ``ceil(lambda * L)`` steps and the right side ``floor(lambda * L)`` steps;
* a threshold at which a class's only positive step is index 0 yields no proposal for that class
  (the research code tests ``np.where(x > 0)[0].any()``, which is false for ``[0]``).

Research-code crashes not reproduced: a single-step sequence (``interp1d`` needs two samples; here
the sample is repeated) and a class whose every run is shorter than ``min_length`` at some threshold
(an ``IndexError`` there; here that threshold simply contributes nothing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fustal.errors import FustalError
from fustal.pseudo.nms import nms_research, ragged_arange

CAS_THRESHOLDS: tuple[float, ...] = tuple(np.arange(0.0, 0.25, 0.025).tolist())
ACTIONNESS_THRESHOLDS: tuple[float, ...] = tuple(np.arange(0.1, 0.925, 0.025).tolist())
PROPOSAL_COLUMNS: tuple[str, ...] = ("class_index", "score", "start_s", "end_s")

# numpy arrays or torch tensors (duck-typed: worker processes need not import torch)
ArrayOrTensor = Any


def _to_float64(x: ArrayOrTensor, name: str) -> np.ndarray:
    """Numpy float64 copy of an array or tensor; non-numeric or non-finite input is an error."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor
        x = x.detach().cpu().double().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise FustalError(f"{name}: not a numeric array") from None
    if not np.isfinite(arr).all():
        raise FustalError(f"{name}: contains NaN or infinite values")
    return arr


def _thresholds(values: Sequence[float], name: str) -> np.ndarray:
    """Thresholds as a 1-D float64 array ``[K]`` (``K`` may be 0)."""
    arr = _to_float64(values, name)
    if arr.ndim != 1:
        raise FustalError(f"{name}: expected a flat sequence of numbers, got shape {arr.shape}")
    return arr


def predicted_classes(video_scores: np.ndarray, class_thresh: float = 0.2) -> np.ndarray:
    """Indices ``[P]`` (ascending) of classes with ``video_scores [C] >= class_thresh``.

    If no class passes, the single argmax class is returned.
    """
    classes = np.flatnonzero(video_scores >= class_thresh)
    if classes.size == 0:
        classes = np.array([int(np.argmax(video_scores))])
    return classes


def minmax_normalize(x: np.ndarray) -> np.ndarray:
    """Per-column min-max normalization of ``x [T, K]`` over time, as in the research code.

    ``(x - relu(min)) / (relu(max) - relu(min))`` with a non-positive range replaced by 1,
    clipped to ``[0, 1]``. Returns ``[T, K]``.
    """
    low = np.maximum(x.min(axis=0), 0.0)
    span = np.maximum(x.max(axis=0), 0.0) - low
    span = np.where(span <= 0.0, 1.0, span)
    return np.clip((x - low) / span, 0.0, 1.0)


def upsample_linear(x: np.ndarray, upscale: int = 24) -> np.ndarray:
    """Linear interpolation of ``x [T, K]`` at ``arange(0, T, 1 / upscale)``: ``[T * upscale, K]``.

    Past the last sample the last segment is extrapolated; the arithmetic matches
    ``scipy.interpolate.interp1d(kind="linear", fill_value="extrapolate")`` bit for bit. A single
    sample (``T == 1``), where interpolation is undefined, is repeated.
    """
    num_steps = x.shape[0]
    grid = np.arange(0, num_steps, 1 / upscale)
    if num_steps == 1:
        return np.repeat(x, grid.size, axis=0)
    upper = np.clip(np.ceil(grid).astype(np.int64), 1, num_steps - 1)
    lower = upper - 1
    return (x[upper] - x[lower]) * (grid - lower)[:, None] + x[lower]


def threshold_runs(
    x: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Runs of positive steps of every row of ``x [R, L]`` under every threshold ``[K]``.

    A step is positive for threshold ``th`` when the research zeroing (values ``< th`` set to 0)
    leaves it ``> 0``, i.e. ``x >= th`` and ``x > 0``. Instead of a ``[R, K, L]`` mask, each step
    counts how many (sorted) thresholds it passes; a run of threshold ``k`` starts where that
    count rises above ``k`` and ends where it falls to ``k`` or below, so the work is
    ``O(R L log K)`` plus the number of runs.

    Returns:
        ``(rows, k, first, last)``, each ``[M]`` int64 (``k`` indexes ``thresholds`` as given,
        ``last`` inclusive), ordered by row, then ``k``, then position.
    """
    num_rows, length = x.shape
    num_th = thresholds.size
    effective = np.maximum(thresholds, np.nextafter(0.0, 1.0))
    sort = np.argsort(effective, kind="stable")
    passed = np.zeros((num_rows, length + 2), dtype=np.int64)
    passed[:, 1:-1] = np.searchsorted(effective[sort], x, side="right")
    inner = passed[:, 1:-1]
    start_pos, start_k = ragged_arange(np.maximum(inner - passed[:, :-2], 0).ravel())
    end_pos, end_k = ragged_arange(np.maximum(inner - passed[:, 2:], 0).ravel())
    start_key = (start_pos // length) * num_th + sort[passed[:, :-2].ravel()[start_pos] + start_k]
    end_key = (end_pos // length) * num_th + sort[passed[:, 2:].ravel()[end_pos] + end_k]
    start_order = np.argsort(start_key, kind="stable")
    end_order = np.argsort(end_key, kind="stable")
    key = start_key[start_order]
    return (
        key // max(num_th, 1),
        key % max(num_th, 1),
        start_pos[start_order] % length,
        end_pos[end_order] % length,
    )


def _outer_inner_contrast(
    padded: np.ndarray, rows: np.ndarray, first: np.ndarray, last: np.ndarray, oic_lambda: float
) -> np.ndarray:
    """Outer-inner contrast ``inner - outer`` of runs over rows of ``padded [R, L + 1]``.

    Args:
        padded: ``[R, L + 1]`` the sequences the means read, plus one ignored trailing column
            (so that every range end is a valid ``reduceat`` index).
        rows, first, last: ``[M]`` row and inclusive step range of each run.
        oic_lambda: the outer region reaches ``oic_lambda * length`` steps beyond each end
            (research-code truncation, see the module docstring); an empty region scores 0.

    Returns:
        ``[M]`` float64: mean over the run minus mean over its outer region. Every range is
        summed on its own (``np.add.reduceat``), so rounding stays relative to that range.
    """
    if rows.size == 0:
        return np.zeros(0)
    stride = padded.shape[1]
    length = last - first + 1
    reach = oic_lambda * length
    outer_first = np.maximum(0.0, np.trunc(first - reach)).astype(np.int64)
    outer_last = np.minimum(stride - 2, np.trunc(last + reach)).astype(np.int64)
    base = rows * stride
    # Per run: [outer_first, first) left, [first, last] inner, (last, outer_last] right; the
    # reduction from outer_last + 1 to the next run's bound is unused.
    bounds = np.stack([outer_first, first, last + 1, outer_last + 1], axis=1) + base[:, None]
    sums = np.add.reduceat(padded.ravel(), bounds.ravel()).reshape(-1, 4)
    left, right = first - outer_first, outer_last - last
    outer_sum = np.where(left > 0, sums[:, 0], 0.0) + np.where(right > 0, sums[:, 2], 0.0)
    count = left + right
    outer = np.divide(outer_sum, count, out=np.zeros(count.shape), where=count > 0)
    return sums[:, 1] / length - outer


def _keep_runs(
    group: np.ndarray, first: np.ndarray, last: np.ndarray, num_groups: int, min_length: int
) -> np.ndarray:
    """Bool ``[M]``: runs of at least ``min_length`` steps, except a lone run at step 0 of its
    (row, threshold) ``group`` (the research code's ``np.where(x > 0)[0].any()`` test)."""
    runs_per_group = np.bincount(group, minlength=num_groups)
    lone_at_zero = (last == 0) & (runs_per_group[group] == 1)
    return (last - first + 1 >= min_length) & ~lone_at_zero


def _read_rows(cas_up: np.ndarray, cas_th: np.ndarray) -> np.ndarray:
    """Rows the outer-inner means read, ``[P * K + P, L + 1]`` for ``cas_up [P, L]``, ``cas_th
    [K]``: the CAS thresholded per (class, threshold), then the raw CAS per class; a zero column."""
    num_pred, length = cas_up.shape
    num_cas_rows = num_pred * cas_th.size
    padded = np.zeros((num_cas_rows + num_pred, length + 1))
    thresholded = padded[:num_cas_rows].reshape(num_pred, cas_th.size, length + 1)[..., :length]
    np.copyto(thresholded, cas_up[:, None, :], where=cas_up[:, None, :] >= cas_th[:, None])
    padded[num_cas_rows:, :length] = cas_up
    return padded


def _runs(
    cas_up: np.ndarray, act_up: np.ndarray, cas_th: np.ndarray, act_th: np.ndarray, min_length: int
) -> tuple[np.ndarray, ...]:
    """Kept runs of ``cas_up [P, L]`` in research order, per class those of its CAS thresholds
    ``[K]``, then those of ``act_up [1, L]`` (every class's) -> ``(class_pos, rows, first, last)``
    ``[M]``: position in ``cas_up``, :func:`_read_rows` row, inclusive step range."""
    num_pred = cas_up.shape[0]
    num_cas_rows = num_pred * cas_th.size
    c_class, c_k, c_first, c_last = threshold_runs(cas_up, cas_th)
    c_row = c_class * cas_th.size + c_k
    keep = _keep_runs(c_row, c_first, c_last, num_cas_rows, min_length)
    _, a_k, a_first, a_last = threshold_runs(act_up, act_th)
    a_keep = _keep_runs(a_k, a_first, a_last, act_th.size, min_length)
    a_first, a_last = np.tile(a_first[a_keep], num_pred), np.tile(a_last[a_keep], num_pred)
    a_class = np.repeat(np.arange(num_pred), np.count_nonzero(a_keep))
    cas_runs = (c_class[keep], c_row[keep], c_first[keep], c_last[keep])
    act_runs = (a_class, num_cas_rows + a_class, a_first, a_last)
    block = np.repeat([0, 1], [cas_runs[0].size, a_class.size])
    order = np.argsort(2 * np.concatenate([cas_runs[0], a_class]) + block, kind="stable")
    return tuple(np.concatenate(p)[order] for p in zip(cas_runs, act_runs, strict=True))


def _check_inputs(
    cas: ArrayOrTensor, actionness: ArrayOrTensor, video_scores: ArrayOrTensor
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate shapes ``cas [T, C]``, ``actionness [T]``, ``video_scores [C]`` (C >= 1)."""
    cas_np = _to_float64(cas, "cas")
    act_np = _to_float64(actionness, "actionness")
    scores_np = _to_float64(video_scores, "video_scores")
    if cas_np.ndim != 2:
        raise FustalError(f"cas: expected shape [T, C], got {cas_np.shape}")
    num_steps, num_classes = cas_np.shape
    if num_classes == 0:
        raise FustalError("cas: no classes (shape [T, 0])")
    if act_np.shape != (num_steps,):
        raise FustalError(f"actionness: expected shape ({num_steps},), got {act_np.shape}")
    if scores_np.shape != (num_classes,):
        raise FustalError(f"video_scores: expected shape ({num_classes},), got {scores_np.shape}")
    return cas_np, act_np, scores_np


def cas_to_proposals(
    cas: ArrayOrTensor,
    actionness: ArrayOrTensor,
    video_scores: ArrayOrTensor,
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
    """Proposals of one video from its CAS (METHOD.md section 3).

    Args:
        cas: ``[T, C]`` class activation sequence (numpy or torch).
        actionness: ``[T]``.
        video_scores: ``[C]`` video-level class scores.
        seconds_per_step: duration of one CAS step (``16 / fps * T_orig / T``).
        class_thresh: video score a class needs to be predicted (else the argmax is used).
        cas_thresholds: thresholds on the normalized CAS; inner/outer scores read the
            *thresholded* CAS.
        actionness_thresholds: thresholds on the normalized actionness; inner/outer scores read
            the *unthresholded* normalized CAS.
        upscale: temporal upsampling factor.
        nms_thresh: class-wise research-NMS threshold.
        oic_lambda: outer-region size relative to the run length.
        oic_gamma: weight of the video score in the proposal score.
        min_length: shortest run (in upsampled steps) that becomes a proposal.

    Returns:
        ``[P, 4]`` float64 rows ``(class_index, score, start_s, end_s)`` (:data:`PROPOSAL_COLUMNS`),
        ordered by class index, then in NMS order: descending score, where scores equal to 10
        decimals are ties and ties go later proposal first in the research order of the class's
        proposals (CAS thresholds in the given order, then actionness thresholds in the given
        order, runs in time order). ``T == 0`` gives ``[0, 4]``.
    """
    cas_np, act_np, scores_np = _check_inputs(cas, actionness, video_scores)
    cas_th = _thresholds(cas_thresholds, "cas_thresholds")
    act_th = _thresholds(actionness_thresholds, "actionness_thresholds")
    if not (isinstance(upscale, int | np.integer) and upscale >= 1):
        raise FustalError(f"upscale: expected a positive integer, got {upscale!r}")
    step = seconds_per_step
    if not (isinstance(step, int | float | np.number) and 0 < step < np.inf):
        raise FustalError(f"seconds_per_step: expected a positive number, got {step!r}")
    if cas_np.shape[0] == 0:
        return np.zeros((0, len(PROPOSAL_COLUMNS)))
    classes = predicted_classes(scores_np, class_thresh)
    cas_up = upsample_linear(minmax_normalize(cas_np)[:, classes], upscale).T  # [P, L]
    act_up = upsample_linear(minmax_normalize(act_np[:, None]), upscale).T  # [1, L]
    class_pos, rows, first, last = _runs(cas_up, act_up, cas_th, act_th, min_length)
    contrast = _outer_inner_contrast(_read_rows(cas_up, cas_th), rows, first, last, oic_lambda)
    scores = contrast + oic_gamma * scores_np[classes[class_pos]]
    segments = np.stack([first, last + 1], axis=1) * (seconds_per_step / upscale)
    keep_idx = nms_research(segments, scores, nms_thresh, groups=class_pos)
    return np.column_stack(
        [classes[class_pos[keep_idx]].astype(np.float64), scores[keep_idx], segments[keep_idx]]
    ).reshape(-1, len(PROPOSAL_COLUMNS))


def threshold_values(spec: Any) -> np.ndarray:
    """A threshold list as configured: ``{start, stop, step}`` -> ``np.arange(start, stop,
    step)``; a list is taken as is."""
    if isinstance(spec, Mapping):
        return np.arange(float(spec["start"]), float(spec["stop"]), float(spec["step"]))
    return np.asarray(list(spec), dtype=np.float64)


def proposal_kwargs(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The ``proposals`` config (METHOD.md section 3 values) -> keyword arguments of
    :func:`cas_to_proposals` (threshold ranges expanded)."""
    kwargs = dict(spec)
    for key in ("cas_thresholds", "actionness_thresholds"):
        if key in kwargs:
            kwargs[key] = threshold_values(kwargs[key])
    return kwargs
