"""Trident boundary decoding, per-level candidate selection and per-class Gaussian soft-NMS."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fustal.errors import FustalError


def boundary_windows(
    start_logits: Tensor, end_logits: Tensor, num_bins: int
) -> tuple[Tensor, Tensor]:
    """Neighbour windows of the boundary logits (views, no copy beyond the padding).

    ``start_logits, end_logits [B, T, C]`` -> ``left, right [B, T, C, num_bins + 1]`` with
    ``left[b, t, c, j] = start_logits[b, t - num_bins + j, c]`` and
    ``right[b, t, c, j] = end_logits[b, t + j, c]``; out-of-range neighbours read 0.
    """
    left = F.pad(start_logits, (0, 0, num_bins, 0)).unfold(1, num_bins + 1, 1)
    right = F.pad(end_logits, (0, 0, 0, num_bins)).unfold(1, num_bins + 1, 1)
    return left, right


def trident_distances(left_window: Tensor, right_window: Tensor, offsets: Tensor) -> Tensor:
    """Expected boundary distances from the Trident head.

    ``left_window, right_window [..., K]`` (K = num_bins + 1), ``offsets [..., 2, K]`` ->
    ``[..., 2]``: left ``sum_j softmax_j(left + off_left)[j] * (K - 1 - j)``, right
    ``sum_j softmax_j(right + off_right)[j] * j`` (units of the level stride).
    """
    bins = torch.arange(left_window.shape[-1], device=offsets.device, dtype=offsets.dtype)
    p_left = torch.softmax(left_window + offsets[..., 0, :], dim=-1)
    p_right = torch.softmax(right_window + offsets[..., 1, :], dim=-1)
    return torch.stack(((p_left * bins.flip(0)).sum(-1), (p_right * bins).sum(-1)), dim=-1)


def trident_offsets(
    start_logits: Tensor, end_logits: Tensor, offsets: Tensor, num_bins: int
) -> Tensor:
    """Decoded (left, right) distances for every point and class of one level.

    ``start_logits, end_logits [B, T, C]``, ``offsets [B, T, 2, num_bins + 1]`` ->
    ``[B, T, C, 2]`` in units of the level stride.
    """
    left, right = boundary_windows(start_logits, end_logits, num_bins)
    return trident_distances(left, right, offsets[:, :, None])


def level_candidates(
    cls_logits: Tensor,
    start_logits: Tensor,
    end_logits: Tensor,
    offsets: Tensor,
    mask: Tensor,
    stride: int,
    num_bins: int,
    pre_nms_thresh: float = 0.001,
    pre_nms_topk: int = 2000,
    min_duration: float = 0.05,
) -> tuple[Tensor, Tensor, Tensor]:
    """Candidates of one video on one level.

    ``cls/start/end [T, C]``, ``offsets [T, 2, num_bins + 1]``, ``mask [T]`` -> ``segments
    [N, 2]`` (grid units), ``scores [N]``, ``labels [N]``: scores ``sigmoid > pre_nms_thresh``,
    the ``pre_nms_topk`` best, decoded at ``t = i * stride``, longer than ``min_duration``.
    """
    num_classes = cls_logits.shape[-1]
    prob = (cls_logits.sigmoid() * mask[:, None].to(cls_logits.dtype)).flatten()
    keep = torch.nonzero(prob > pre_nms_thresh).squeeze(1)
    scores, order = prob[keep].sort(descending=True)
    scores, flat = scores[:pre_nms_topk], keep[order[:pre_nms_topk]]
    point, label = flat // num_classes, flat % num_classes
    left, right = boundary_windows(start_logits[None], end_logits[None], num_bins)
    dist = trident_distances(left[0, point, label], right[0, point, label], offsets[point])
    t = point.to(dist.dtype) * stride
    segments = torch.stack((t - dist[:, 0] * stride, t + dist[:, 1] * stride), dim=1)
    long_enough = segments[:, 1] - segments[:, 0] > min_duration
    return segments[long_enough], scores[long_enough], label[long_enough]


def segment_iou(segment: Tensor, others: Tensor, eps: float = 1e-8) -> Tensor:
    """1-D IoU of ``segment [..., 2]`` with ``others [..., N, 2]`` -> ``[..., N]``."""
    inter = (
        torch.minimum(segment[..., None, 1], others[..., 1])
        - torch.maximum(segment[..., None, 0], others[..., 0])
    ).clamp(min=0)
    union = (segment[..., None, 1] - segment[..., None, 0]) + (others[..., 1] - others[..., 0])
    return inter / (union - inter).clamp(min=eps)


def soft_nms(
    segments: Tensor,
    scores: Tensor,
    labels: Tensor,
    sigma: float = 0.5,
    min_score: float = 0.001,
    max_seg_num: int = 2000,
    eps: float = 1e-8,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class Gaussian soft-NMS, all classes advanced together.

    ``segments [N, 2]``, ``scores [N]``, ``labels [N]`` -> kept ``segments [K, 2]``, decayed
    ``scores [K]``, ``labels [K]``, sorted by score (descending), ``K <= max_seg_num``. In each
    class, repeatedly the best remaining segment is kept and the others' scores are multiplied by
    ``exp(-iou^2 / sigma)``; those falling below ``min_score`` are dropped; at most
    ``max_seg_num`` are kept per class (the kept scores of a class never increase, so the global
    top ``max_seg_num`` is unaffected). Segments starting below ``min_score`` are dropped too.
    One loop iteration per kept segment of the largest class.
    """
    if segments.shape[0] == 0:
        return segments.new_zeros(0, 2), scores.new_zeros(0), labels.new_zeros(0)
    classes, row = torch.unique(labels, return_inverse=True)
    counts = torch.bincount(row, minlength=len(classes))
    order = torch.argsort(row, stable=True)
    col = torch.arange(len(row), device=row.device) - (torch.cumsum(counts, 0) - counts)[row[order]]
    width = int(counts.max())
    segs = segments.new_zeros(len(classes), width, 2)
    live = scores.new_full((len(classes), width), -1.0)
    segs[row[order], col] = segments[order]
    live[row[order], col] = scores[order]
    active = live >= min_score
    rows = torch.arange(len(classes), device=row.device)
    kept_segs, kept_scores, kept_rows = [], [], []
    for _ in range(min(width, max_seg_num)):
        has = active.any(dim=1)
        if not bool(has.any()):
            break
        best = torch.where(active, live, torch.full_like(live, -1.0)).argmax(dim=1)
        best_seg, best_score = segs[rows, best], live[rows, best]
        kept_segs.append(best_seg[has])
        kept_scores.append(best_score[has])
        kept_rows.append(rows[has])
        active[rows, best] = False
        iou = segment_iou(best_seg, segs, eps)
        live = torch.where(active, live * torch.exp(-(iou * iou) / sigma), live)
        active &= live >= min_score
    out_segs, out_scores = torch.cat(kept_segs), torch.cat(kept_scores)
    out_labels = classes[torch.cat(kept_rows)]
    top = torch.argsort(out_scores, descending=True, stable=True)[:max_seg_num]
    return out_segs[top], out_scores[top], out_labels[top]


def decode_video(
    cls_logits: Sequence[Tensor],
    start_logits: Sequence[Tensor],
    end_logits: Sequence[Tensor],
    offsets: Sequence[Tensor],
    masks: Sequence[Tensor],
    strides: Sequence[int],
    num_bins: int,
    pre_nms_thresh: float = 0.001,
    pre_nms_topk: int = 2000,
    min_duration: float = 0.05,
    nms_sigma: float = 0.5,
    min_score: float = 0.001,
    max_seg_num: int = 2000,
) -> np.ndarray:
    """Detections of one video from its per-level outputs (``[T_l, C]``, ``[T_l, 2, K]``,
    ``[T_l]``) -> ``[K, 4]`` float64 rows ``(class_index, score, start_grid, end_grid)``."""
    if not len(cls_logits) == len(strides) == len(masks):
        raise FustalError(f"decode: {len(cls_logits)} output levels for {len(strides)} strides")
    parts = [
        level_candidates(
            c, s, e, o, m, stride, num_bins, pre_nms_thresh, pre_nms_topk, min_duration
        )
        for c, s, e, o, m, stride in zip(
            cls_logits, start_logits, end_logits, offsets, masks, strides, strict=True
        )
    ]
    segments, scores, labels = (torch.cat(x) for x in zip(*parts, strict=True))
    segments, scores, labels = soft_nms(
        segments.float(), scores.float(), labels, nms_sigma, min_score, max_seg_num
    )
    rows = torch.cat((labels[:, None].to(scores.dtype), scores[:, None], segments), dim=1)
    return rows.detach().cpu().double().numpy()
