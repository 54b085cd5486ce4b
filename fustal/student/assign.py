"""Points of the feature pyramid and TriDet label assignment (centre sampling, range, shortest)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from fustal.errors import FustalError


def make_points(
    level_lengths: Sequence[int],
    strides: Sequence[int],
    regression_ranges: Sequence[Sequence[float]],
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Points ``t = i * stride`` (grid units) of every level, concatenated level after level.

    Returns ``points [P, 2]`` (t, stride) and ``ranges [P, 2]`` (the level's regression range),
    ``P = sum(level_lengths)``.
    """
    if not len(level_lengths) == len(strides) == len(regression_ranges):
        raise FustalError(
            f"regression_ranges: {len(regression_ranges)} rows for {len(strides)} pyramid levels"
        )
    lengths = torch.as_tensor(list(level_lengths), device=device)
    stride = torch.as_tensor(list(strides), dtype=torch.float32, device=device)
    rng = torch.as_tensor([list(r) for r in regression_ranges], dtype=torch.float32, device=device)
    level = torch.repeat_interleave(torch.arange(len(lengths), device=device), lengths)
    offsets = torch.cumsum(lengths, 0) - lengths
    index = torch.arange(int(lengths.sum()), device=device) - offsets[level]
    points = torch.stack((index * stride[level], stride[level]), dim=1)
    return points, rng[level]


def assign_targets(
    points: Tensor,
    segments: Tensor,
    labels: Tensor,
    num_classes: int,
    ranges: Tensor,
    center_radius: float = 1.5,
    length_tolerance: float = 1e-3,
) -> tuple[Tensor, Tensor, Tensor]:
    """Assign ground-truth segments to pyramid points (TriDet / ActionFormer rule).

    ``points [P, 2]`` (t, stride), ``segments [M, 2]`` (start, end; grid units),
    ``labels [M]`` (long), ``ranges [P, 2]``. A point is positive for a segment when it lies
    strictly inside the centre region ``centre -/+ center_radius * stride`` clipped to the
    segment, and ``max(t - start, end - t)`` is within its range (inclusive). Among several,
    the shortest segment wins; every segment within ``length_tolerance`` of that length adds its
    class. Returns ``cls_targets [P, C]`` (0/1 float), ``reg_targets [P, 2]`` (left, right
    distances to the winning segment divided by the stride; 0 on negatives) and
    ``positive [P]`` (bool).
    """
    if segments.dim() != 2 or segments.shape[-1] != 2 or labels.shape != segments.shape[:1]:
        raise FustalError(
            f"segments/labels: expected [M, 2] and [M], got {tuple(segments.shape)} "
            f"and {tuple(labels.shape)}"
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise FustalError(f"labels: class index outside [0, {num_classes}): {labels.tolist()}")
    num_points = points.shape[0]
    segments = segments.to(device=points.device, dtype=points.dtype)
    if segments.shape[0] == 0:
        return (
            points.new_zeros(num_points, num_classes),
            points.new_zeros(num_points, 2),
            torch.zeros(num_points, dtype=torch.bool, device=points.device),
        )
    t, stride = points[:, :1], points[:, 1:]
    start, end = segments[None, :, 0], segments[None, :, 1]
    left, right = t - start, end - t
    centre = 0.5 * (start + end)
    inner_left = torch.maximum(centre - center_radius * stride, start)
    inner_right = torch.minimum(centre + center_radius * stride, end)
    inside = torch.minimum(t - inner_left, inner_right - t) > 0
    reach = torch.maximum(left, right)
    in_range = (reach >= ranges[:, :1]) & (reach <= ranges[:, 1:])
    lengths = (end - start).expand(num_points, -1)
    lengths = lengths.masked_fill(~(inside & in_range), float("inf"))
    min_len, winner = lengths.min(dim=1)
    positive = torch.isfinite(min_len)
    ties = (lengths <= min_len[:, None] + length_tolerance) & positive[:, None]
    one_hot = torch.nn.functional.one_hot(labels.to(points.device), num_classes).to(points.dtype)
    cls_targets = (ties.to(points.dtype) @ one_hot).clamp_(max=1.0)
    rows = torch.arange(num_points, device=points.device)
    reg = torch.stack((left[rows, winner], right[rows, winner]), dim=1) / stride
    reg_targets = reg * positive[:, None].to(reg.dtype)
    return cls_targets, reg_targets, positive
