"""Trident boundary decoding, candidate selection and per-class Gaussian soft-NMS, batched.

Everything here works on padded batches: a :class:`SegmentBatch` holds ``[B, N]`` candidates of
``B`` videos with a validity mask, so that decoding, soft-NMS and the EMA teacher's target
selection run on the training device without a host synchronisation per candidate or per
soft-NMS iteration.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple, TypeAlias

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fustal.config.schema import InferenceSchema
from fustal.errors import FustalError
from fustal.segments import segment_iou

if TYPE_CHECKING:
    from fustal.student.model import TriDetOutput

# the decoding defaults (one statement of them: the config schema); every ``settings`` below is
# such an InferenceSchema
DECODING = InferenceSchema()

# soft-NMS checks for termination and compacts its working set every this many iterations (the
# only host synchronisations of its loop)
SOFT_NMS_CHECK_EVERY = 16


class SegmentBatch(NamedTuple):
    """Padded segments of ``B`` videos: ``segments [B, N, 2]`` (grid units), ``scores [B, N]``,
    ``labels [B, N]`` (long), ``valid [B, N]`` (bool; padding and dropped entries are False)."""

    segments: Tensor
    scores: Tensor
    labels: Tensor
    valid: Tensor

    def to_rows(self) -> list[np.ndarray]:
        """Per video ``[K, 4]`` float64 rows ``(class_index, score, start, end)`` of the valid
        entries, in stored order."""
        table = torch.cat(
            (self.labels[..., None].to(self.scores.dtype), self.scores[..., None], self.segments),
            dim=-1,
        )
        rows = table.detach().to("cpu", torch.float64).numpy()
        valid = self.valid.cpu().numpy()
        return [r[v] for r, v in zip(rows, valid, strict=True)]


class Levels(NamedTuple):
    """The heads' outputs per pyramid level, what decoding and the losses read (a
    :class:`~fustal.student.model.TriDetOutput` has the same fields): ``cls_logits``,
    ``start_logits``, ``end_logits`` ``[B, T_l, C]``, ``offsets`` ``[B, T_l, 2, num_bins + 1]``,
    ``masks`` ``[B, T_l]`` (bool)."""

    cls_logits: Sequence[Tensor]
    start_logits: Sequence[Tensor]
    end_logits: Sequence[Tensor]
    offsets: Sequence[Tensor]
    masks: Sequence[Tensor]


HeadOutputs: TypeAlias = "Levels | TriDetOutput"


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


def level_scores(cls_logits: Tensor, mask: Tensor, pre_nms_topk: int) -> tuple[Tensor, Tensor]:
    """The best ``k = min(pre_nms_topk, T * C)`` point-class scores of one level:
    ``cls_logits [B, T, C]``, ``mask [B, T]`` -> sigmoid ``scores [B, k]`` (descending) and
    their flat indices ``[B, k]`` (``point * C + class``), in float32."""
    prob = (cls_logits.float().sigmoid() * mask[..., None]).reshape(cls_logits.shape[0], -1)
    return prob.topk(min(pre_nms_topk, prob.shape[1]), dim=1)


def decode_points(
    start_logits: Tensor,
    end_logits: Tensor,
    offsets: Tensor,
    scores: Tensor,
    flat: Tensor,
    stride: int,
    num_bins: int,
    settings: InferenceSchema = DECODING,
) -> SegmentBatch:
    """Decode chosen point-class pairs of one level: ``start/end [B, T, C]``, ``offsets
    [B, T, 2, num_bins + 1]``, ``scores [B, k]`` and flat indices ``[B, k]`` (``point * C +
    class``) -> ``[B, k]`` segments at ``t = point * stride`` (grid units); valid when the score
    exceeds ``pre_nms_thresh`` and it is longer than ``min_duration`` (of ``settings``). Float32."""
    batch, _, num_classes = start_logits.shape
    point, label = flat // num_classes, flat % num_classes
    rows = torch.arange(batch, device=flat.device)[:, None]
    left, right = boundary_windows(start_logits.float(), end_logits.float(), num_bins)
    dist = trident_distances(
        left[rows, point, label], right[rows, point, label], offsets.float()[rows, point]
    )
    t = point.to(dist.dtype) * stride
    segments = torch.stack((t - dist[..., 0] * stride, t + dist[..., 1] * stride), dim=-1)
    length = segments[..., 1] - segments[..., 0]
    valid = (scores > settings.pre_nms_thresh) & (length > settings.min_duration)
    return SegmentBatch(segments, scores, label, valid)


def candidates(
    output: HeadOutputs, strides: Sequence[int], num_bins: int, settings: InferenceSchema = DECODING
) -> SegmentBatch:
    """Candidates of every level of ``output`` (per level ``[B, T_l, ...]``), concatenated level
    after level -> ``[B, N]``: per level the best ``k = min(pre_nms_topk, T_l * C)`` point-class
    scores (:func:`level_scores`, sorted descending), decoded by :func:`decode_points`."""
    if not len(output.cls_logits) == len(strides) == len(output.masks):
        raise FustalError(
            f"decode: {len(output.cls_logits)} output levels for {len(strides)} strides"
        )
    parts = [
        decode_points(
            s, e, o, *level_scores(c, m, settings.pre_nms_topk), stride, num_bins, settings
        )
        for c, s, e, o, m, stride in zip(
            output.cls_logits,
            output.start_logits,
            output.end_logits,
            output.offsets,
            output.masks,
            strides,
            strict=True,
        )
    ]
    return SegmentBatch(*(torch.cat(x, dim=1) for x in zip(*parts, strict=True)))


def class_groups(
    cands: SegmentBatch, scores: Tensor, num_classes: int
) -> tuple[Tensor, Tensor, Tensor] | None:
    """Soft-NMS's working set: the entries of ``scores [B * N]`` (the flat candidate scores,
    -inf where left out) grouped by (video, class), one group a row -> ``live [G, W]`` scores,
    ``segs [G, W, 2]`` and flat candidate indices ``src [G, W]`` (padding: -inf, 0, -1), entries
    in candidate order; None without any entry."""
    num = cands.scores.shape[1]
    items = torch.nonzero(scores > float("-inf")).squeeze(1)
    if not items.numel():
        return None
    group = torch.div(items, num, rounding_mode="floor") * num_classes
    group = group + cands.labels.reshape(-1)[items]
    order = torch.argsort(group, stable=True)
    items, group = items[order], group[order]
    _, dense, counts = torch.unique_consecutive(group, return_inverse=True, return_counts=True)
    col = torch.arange(len(items), device=items.device) - (torch.cumsum(counts, 0) - counts)[dense]
    shape = (len(counts), int(counts.max()))
    live = scores.new_full(shape, float("-inf"))
    segs = scores.new_zeros(*shape, 2)
    src = items.new_full(shape, -1)
    live[dense, col] = scores[items]
    segs[dense, col] = cands.segments.reshape(-1, 2).to(scores.dtype)[items]
    src[dense, col] = items
    return live, segs, src


def decay_groups(
    live: Tensor, segs: Tensor, src: Tensor, settings: InferenceSchema, eps: float
) -> tuple[Tensor, Tensor]:
    """Gaussian soft-NMS of every row of a :func:`class_groups` working set at once: the flat
    candidate indices and decayed scores ``[K]`` of the kept entries (score -inf: a finished
    row's pick, not kept). Every :data:`SOFT_NMS_CHECK_EVERY` iterations finished rows and
    dropped entries are compacted away."""
    neg_inf = live.new_tensor(float("-inf"))
    kept_src, kept_scores = [], []
    for step in range(min(live.shape[1], settings.max_seg_num)):
        if step and step % SOFT_NMS_CHECK_EVERY == 0:
            alive = live > neg_inf
            rows = alive.any(dim=1)
            if not bool(rows.any()):
                break
            live, segs, src, alive = live[rows], segs[rows], src[rows], alive[rows]
            cols = torch.argsort((~alive).to(torch.int8), dim=1, stable=True)
            cols = cols[:, : int(alive.sum(dim=1).max())]
            live, src = live.gather(1, cols), src.gather(1, cols)
            segs = segs.gather(1, cols[..., None].expand(-1, -1, 2))
        index = torch.arange(live.shape[0], device=live.device)
        best = live.argmax(dim=1)
        best_score, best_seg = live[index, best], segs[index, best]
        kept_scores.append(best_score)
        kept_src.append(src[index, best])
        live[index, best] = neg_inf
        iou = segment_iou(best_seg[:, None], segs, eps)
        decayed = live * torch.exp(-(iou * iou) / settings.nms_sigma)
        live = torch.where((live > neg_inf) & (decayed >= settings.min_score), decayed, neg_inf)
    return torch.cat(kept_src), torch.cat(kept_scores)


def soft_nms_batch(
    cands: SegmentBatch, num_classes: int, settings: InferenceSchema = DECODING, eps: float = 1e-8
) -> SegmentBatch:
    """Per-class Gaussian soft-NMS of every video of a batch at once.

    In each (video, class), repeatedly the best remaining candidate is kept (the lowest index
    among equal scores) and every other remaining score is multiplied by
    ``exp(-iou^2 / nms_sigma)``; scores falling below ``min_score`` are dropped, as are
    candidates starting below it; at most ``max_seg_num`` are kept per class (all three from
    ``settings``). Returns ``[B, K]`` entries sorted per video by decayed score (descending,
    stable), ``K <= max_seg_num`` the most any video keeps (the kept scores of a class never
    increase, so this is the global top); the valid entries of each row come first.

    All (video, class) groups advance together on a padded working set (:func:`class_groups`,
    :func:`decay_groups`): one iteration per kept candidate of the largest group, each a
    handful of tensor operations and no host synchronisation.
    """
    batch, num = cands.scores.shape
    neg_inf = torch.tensor(float("-inf"), dtype=cands.scores.dtype, device=cands.scores.device)
    usable = cands.valid & (cands.scores >= settings.min_score)
    flat_scores = torch.where(usable, cands.scores, neg_inf).reshape(-1)
    out_scores = torch.full_like(flat_scores, float("-inf"))
    groups = class_groups(cands, flat_scores, num_classes)
    if groups is not None:
        kept, score = decay_groups(*groups, settings, eps)
        hit = score > neg_inf
        out_scores[kept[hit]] = score[hit]
    scores, order = out_scores.reshape(batch, num).sort(dim=1, descending=True, stable=True)
    # kept entries come first in every row: keep the widest row's count (at most max_seg_num)
    width = min(int((scores > neg_inf).sum(dim=1).max()) if num else 0, settings.max_seg_num)
    scores, order = scores[:, :width], order[:, :width]
    return SegmentBatch(
        cands.segments.gather(1, order[..., None].expand(-1, -1, 2)),
        scores,
        cands.labels.gather(1, order),
        scores > neg_inf,
    )


def teacher_selection(cands: SegmentBatch, score_thresh: float) -> tuple[SegmentBatch, Tensor]:
    """The candidates a teacher's soft-NMS needs: those scoring above ``score_thresh`` and, in a
    video where none does, its single best candidate. Soft-NMS never raises a score, so a
    candidate at or below the threshold can neither end above it nor suppress one that does:
    soft-NMS of this selection, then the threshold, equals soft-NMS of all candidates, then the
    threshold. Returns the selection and ``fallback [B]`` (videos that use their best one)."""
    valid = cands.valid
    above = valid & (cands.scores > score_thresh)
    fallback = ~above.any(dim=1) & valid.any(dim=1)
    if not cands.scores.shape[1]:  # no candidate in any video (e.g. all under pre_nms_thresh)
        return cands, fallback
    best = torch.where(valid, cands.scores, torch.full_like(cands.scores, -1.0)).argmax(dim=1)
    pick = F.one_hot(best, cands.scores.shape[1]).bool() & fallback[:, None]
    return cands._replace(valid=above | pick), fallback


def teacher_targets(
    cands: SegmentBatch,
    num_classes: int,
    score_thresh: float = 0.4,
    settings: InferenceSchema = DECODING,
) -> SegmentBatch:
    """The EMA teacher's targets (METHOD.md section 5): soft-NMS detections with score above
    ``score_thresh``, or the single best one of a video where none passes; start and end
    clamped at 0 (grid units). Soft-NMS runs on :func:`teacher_selection` only."""
    selected, fallback = teacher_selection(cands, score_thresh)
    dets = soft_nms_batch(selected, num_classes, settings)
    keep = dets.valid & ((dets.scores > score_thresh) | fallback[:, None])
    width = int(keep.sum(dim=1).max()) if keep.numel() else 0  # kept entries come first
    segments = dets.segments[:, :width].clamp(min=0.0)
    return SegmentBatch(segments, dets.scores[:, :width], dets.labels[:, :width], keep[:, :width])


def segment_voting(dets: SegmentBatch, cands: SegmentBatch, iou_thresh: float) -> SegmentBatch:
    """Boundary voting (ActionFormer's, per class): each detection ``[B, K]`` gets the mean of
    the candidates ``[B, N]`` before soft-NMS (same video and class, valid) that overlap it by
    tIoU >= ``iou_thresh``, weighted by their scores; scores are unchanged. A detection is one
    of the candidates, so it always votes for itself."""
    segs, other = dets.segments.float(), cands.segments.float()
    iou = segment_iou(segs[:, :, None], other[:, None])  # [B, K, N]
    votes = (
        (iou >= iou_thresh)
        & (dets.labels[:, :, None] == cands.labels[:, None, :])
        & cands.valid[:, None, :]
    )
    weights = torch.where(votes, cands.scores.float()[:, None, :], 0.0)
    total = weights.sum(dim=-1, keepdim=True)
    refined = (weights @ other) / total.clamp(min=1e-8)
    keep = dets.valid[..., None] & (total > 0)
    return dets._replace(segments=torch.where(keep, refined, segs).to(dets.segments.dtype))


def decode_batch(
    output: HeadOutputs, strides: Sequence[int], num_bins: int, settings: InferenceSchema = DECODING
) -> SegmentBatch:
    """Detections of a batch from its per-level outputs (``[B, T_l, C]``,
    ``[B, T_l, 2, K]``, ``[B, T_l]``): :func:`candidates`, then :func:`soft_nms_batch`, then
    (``settings.voting_thresh > 0``) :func:`segment_voting` with the candidates."""
    cands = candidates(output, strides, num_bins, settings)
    dets = soft_nms_batch(cands, output.cls_logits[0].shape[-1], settings)
    voting = settings.voting_thresh
    return segment_voting(dets, cands, voting) if voting > 0 else dets
