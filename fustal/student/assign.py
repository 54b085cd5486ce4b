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
    lengths = [int(n) for n in level_lengths]
    level = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    stride = torch.tensor([float(s) for s in strides])[level]
    index = torch.cat([torch.arange(n, dtype=torch.float32) for n in lengths])
    rng = torch.tensor([[float(v) for v in r] for r in regression_ranges])
    points = torch.stack((index * stride, stride), dim=1).to(device)
    return points, rng[level].to(device)


def assign_batch(
    points: Tensor,
    segments: Tensor,
    labels: Tensor,
    valid: Tensor,
    num_classes: int,
    ranges: Tensor,
    center_radius: float = 1.5,
    length_tolerance: float = 1e-3,
) -> tuple[Tensor, Tensor, Tensor]:
    """Assign padded ground-truth segments of a batch to pyramid points (TriDet / ActionFormer
    rule); no host synchronisation.

    ``points [P, 2]`` (t, stride), ``segments [B, M, 2]`` (start, end; grid units),
    ``labels [B, M]`` (long, in ``[0, num_classes)``: the data layer checks), ``valid [B, M]``
    (False on padding), ``ranges [P, 2]``. A point is positive for a segment when it lies
    strictly inside the centre region ``centre -/+ center_radius * stride`` clipped to the
    segment, and ``max(t - start, end - t)`` is within its range (inclusive). Among several, the
    shortest segment wins; every segment within ``length_tolerance`` of that length adds its
    class. Returns ``cls_targets [B, P, C]`` (0/1 float), ``reg_targets [B, P, 2]`` (left, right
    distances to the winning segment divided by the stride; 0 on negatives) and
    ``positive [B, P]`` (bool).
    """
    if segments.dim() != 3 or segments.shape[-1] != 2 or labels.shape != segments.shape[:2]:
        raise FustalError(
            f"segments/labels: expected [B, M, 2] and [B, M], got {tuple(segments.shape)} "
            f"and {tuple(labels.shape)}"
        )
    batch, num_points = segments.shape[0], points.shape[0]
    segments = segments.to(device=points.device, dtype=points.dtype)
    if segments.shape[1] == 0:
        return (
            points.new_zeros(batch, num_points, num_classes),
            points.new_zeros(batch, num_points, 2),
            torch.zeros(batch, num_points, dtype=torch.bool, device=points.device),
        )
    t, stride = points[None, :, :1], points[None, :, 1:]  # [1, P, 1]
    start, end = segments[:, None, :, 0], segments[:, None, :, 1]  # [B, 1, M]
    left, right = t - start, end - t  # [B, P, M]
    centre = 0.5 * (start + end)
    inner_left = torch.maximum(centre - center_radius * stride, start)
    inner_right = torch.minimum(centre + center_radius * stride, end)
    inside = torch.minimum(t - inner_left, inner_right - t) > 0
    reach = torch.maximum(left, right)
    in_range = (reach >= ranges[None, :, :1]) & (reach <= ranges[None, :, 1:])
    lengths = (end - start).expand(-1, num_points, -1)
    usable = inside & in_range & valid.to(points.device)[:, None, :]
    lengths = lengths.masked_fill(~usable, float("inf"))
    min_len, winner = lengths.min(dim=2)  # [B, P]
    positive = torch.isfinite(min_len)
    ties = (lengths <= min_len[..., None] + length_tolerance) & positive[..., None]
    classes = torch.arange(num_classes, device=points.device)
    one_hot = (labels.to(points.device)[..., None] == classes).to(points.dtype)  # [B, M, C]
    cls_targets = torch.bmm(ties.to(points.dtype), one_hot).clamp_(max=1.0)
    pick = winner[..., None]
    reg = torch.cat((left.gather(2, pick), right.gather(2, pick)), dim=2) / stride
    reg_targets = reg * positive[..., None].to(reg.dtype)
    return cls_targets, reg_targets, positive


def pad_segments(
    segments: Sequence[Tensor], labels: Sequence[Tensor], device: torch.device | str | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-video ``segments [M_i, 2]`` and ``labels [M_i]`` -> padded ``[B, M, 2]``, ``[B, M]``
    and ``valid [B, M]`` (sizes are host-side metadata: no synchronisation)."""
    width = max((len(s) for s in segments), default=0)
    batch = len(segments)
    segs = torch.zeros(batch, width, 2, device=device)
    labs = torch.zeros(batch, width, dtype=torch.long, device=device)
    valid = torch.zeros(batch, width, dtype=torch.bool, device=device)
    for i, (s, lab) in enumerate(zip(segments, labels, strict=True)):
        segs[i, : len(s)] = s.to(device=device, dtype=segs.dtype)
        labs[i, : len(lab)] = lab.to(device)
        valid[i, : len(s)] = True
    return segs, labs, valid


def ignored_points(
    points: Tensor, ignore: Tensor, ignore_valid: Tensor, segments: Tensor, valid: Tensor
) -> Tensor:
    """Points whose classification the loss leaves out: ``[B, P]`` bool, true where a point's
    time ``t`` lies in one of its video's ``ignore`` segments and in none of its target
    ``segments`` (both closed intervals; a target keeps its own points, positive or not).

    ``points [P, 2]`` (t, stride), ``ignore [B, K, 2]`` with ``ignore_valid [B, K]``,
    ``segments [B, M, 2]`` with ``valid [B, M]`` (grid units; False on padding). No host
    synchronisation."""
    t = points[None, :, 0, None]  # [1, P, 1]

    def covered(spans: Tensor, usable: Tensor) -> Tensor:
        spans = spans.to(device=points.device, dtype=points.dtype)
        inside = (t >= spans[:, None, :, 0]) & (t <= spans[:, None, :, 1])  # [B, P, N]
        return (inside & usable.to(points.device)[:, None, :]).any(dim=2)

    return covered(ignore, ignore_valid) & ~covered(segments, valid)
