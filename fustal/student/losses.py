"""Student losses: IoU-weighted sigmoid focal loss, 1-D DIoU, loss normalizer, video-level loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fustal.errors import FustalError
from fustal.student.decode import HeadOutputs, trident_offsets


def sigmoid_focal_loss(
    logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> Tensor:
    """Element-wise sigmoid focal loss (RetinaNet); ``logits``, ``targets`` any equal shape."""
    logits, targets = logits.float(), targets.float()
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * ce * (1 - p_t) ** gamma


def center_iou(pred: Tensor, target: Tensor, eps: float = 1e-8) -> Tensor:
    """IoU of segments sharing one point, given as distances ``[..., 2]`` (left, right) ->
    ``[...]``."""
    inter = torch.minimum(pred, target).sum(-1)
    union = pred.sum(-1) + target.sum(-1) - inter
    return inter / union.clamp(min=eps)


def center_diou_loss(pred: Tensor, target: Tensor, eps: float = 1e-8) -> Tensor:
    """1-D Distance-IoU loss ``1 - IoU + (centre distance / enclosing length)^2`` for segments
    given as distances ``[..., 2]`` from a common point -> ``[...]``."""
    pred, target = pred.float(), target.float()
    enclosing = torch.maximum(pred, target).sum(-1)
    rho = 0.5 * ((pred[..., 1] - pred[..., 0]) - (target[..., 1] - target[..., 0]))
    return 1.0 - center_iou(pred, target, eps) + (rho / enclosing.clamp(min=eps)) ** 2


def update_loss_normalizer(
    normalizer: Tensor | float, num_pos: Tensor | int, momentum: float = 0.9
) -> Tensor:
    """Running normalizer ``momentum * normalizer + (1 - momentum) * max(num_pos, 1)`` (a
    tensor, computed where ``normalizer`` lives: no host synchronisation)."""
    normalizer = torch.as_tensor(normalizer, dtype=torch.float32)
    num_pos = torch.as_tensor(num_pos, device=normalizer.device).to(normalizer.dtype)
    return momentum * normalizer + (1.0 - momentum) * num_pos.clamp(min=1.0)


def detection_losses(
    output: HeadOutputs,
    cls_targets: Tensor,
    reg_targets: Tensor,
    normalizer: Tensor | float,
    num_bins: int,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    iou_weight_power: float = 0.2,
    label_smoothing: float = 0.0,
    ignore: Tensor | None = None,
    eps: float = 1e-6,
) -> dict[str, Tensor]:
    """TriDet classification and regression losses of a batch (float32).

    ``output``: the heads per level (``cls/start/end [B, T_l, C]``, ``offsets
    [B, T_l, 2, num_bins + 1]``, ``masks [B, T_l]``); targets over the concatenated levels:
    ``cls_targets [B, P, C]``, ``reg_targets [B, P, 2]`` (stride units). Every (point, class) is
    decoded with that class's boundary logits (dense: no data-dependent shapes, so no host
    synchronisation). The focal term of each positive (valid point, target class) pair is
    weighted by ``IoU(pred, gt) ** iou_weight_power``, *not detached* as in the research code and
    TriDet: the classification loss also trains the offsets, the start/end heads and the backbone
    (IoU clamped at ``eps`` so that its power keeps a finite gradient); each positive adds a DIoU
    term. Both sums are divided by ``normalizer``. ``label_smoothing`` (ActionFormer/TriDet on
    ActivityNet) turns every valid point's focal targets into ``t * (1 - ls) + ls / (C + 1)``.
    ``ignore [B, P]`` (bool) leaves points out of the classification loss (neither action nor
    background: regions of pseudo labels the filter removed, ``student.data.ignore_score``).
    Returns ``{"cls", "reg"}`` (scalars).
    """
    valid = torch.cat(list(output.masks), dim=1)
    if valid.shape[1] != cls_targets.shape[1]:
        raise FustalError(
            f"targets: {cls_targets.shape[1]} points for {valid.shape[1]} output positions"
        )
    positive = (cls_targets > 0) & valid[..., None]
    levels = zip(output.start_logits, output.end_logits, output.offsets, strict=True)
    dists = [trident_offsets(s.float(), e.float(), o.float(), num_bins) for s, e, o in levels]
    pred = torch.cat(dists, dim=1)  # [B, P, C, 2]
    gt = reg_targets.float()[:, :, None, :].expand_as(pred)
    iou = center_iou(pred, gt).clamp(min=eps)
    weight = torch.where(positive, iou**iou_weight_power, torch.ones_like(iou))
    targets = cls_targets.float()
    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / (targets.shape[-1] + 1)
    logits = torch.cat(list(output.cls_logits), 1)
    focal = sigmoid_focal_loss(logits, targets, focal_alpha, focal_gamma)
    zero = focal.new_zeros(())
    counted = valid if ignore is None else valid & ~ignore
    cls_loss = torch.where(counted[..., None], focal * weight, zero).sum() / normalizer
    reg = torch.where(positive, center_diou_loss(pred, gt), zero)
    return {"cls": cls_loss, "reg": reg.sum() / normalizer}


def video_level_loss(
    logits: Tensor, mask: Tensor, video_labels: Tensor, topk_divisor: int = 5
) -> Tensor:
    """FuSTAL's video-level loss on level-0 class logits (float32, no host synchronisation).

    ``logits [B, T, C]`` (dropout already applied), ``mask [B, T]`` (every video has a valid
    step; the data layer guarantees it), ``video_labels [B, C]``: per video the mean of the top
    ``k = max(valid_length // topk_divisor, 1)`` logits over its valid time, softmax over
    classes, BCE against ``labels / labels.sum()`` averaged over classes, then over the videos
    that have at least one label (0 if none).
    """
    num_steps = logits.shape[1]
    k = (mask.sum(dim=1) // topk_divisor).clamp(min=1)
    masked = logits.float().masked_fill(~mask[..., None], float("-inf"))
    # k <= T // divisor (or 1): a static bound, so topk needs no value from the device
    top = masked.topk(max(num_steps // topk_divisor, 1), dim=1).values
    chosen = torch.arange(top.shape[1], device=k.device)[None, :] < k[:, None]
    mean = torch.where(chosen[..., None], top, torch.zeros_like(top)).sum(1) / k[:, None]
    scores = torch.softmax(mean, dim=-1)
    labels = video_labels.float()
    totals = labels.sum(dim=-1, keepdim=True)
    labelled = (totals[:, 0] > 0).float()
    target = labels / totals.clamp(min=1.0)
    per_video = F.binary_cross_entropy(scores, target, reduction="none").mean(-1)
    return (per_video * labelled).sum() / labelled.sum().clamp(min=1.0)
