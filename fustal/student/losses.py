"""Student losses: IoU-weighted sigmoid focal loss, 1-D DIoU, loss normalizer, video-level loss."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from fustal.errors import FustalError
from fustal.student.decode import boundary_windows, trident_distances


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
    """IoU of segments sharing one point, given as distances ``[N, 2]`` (left, right) -> ``[N]``."""
    inter = torch.minimum(pred[:, 0], target[:, 0]) + torch.minimum(pred[:, 1], target[:, 1])
    union = pred.sum(-1) + target.sum(-1) - inter
    return inter / union.clamp(min=eps)


def center_diou_loss(pred: Tensor, target: Tensor, eps: float = 1e-8) -> Tensor:
    """1-D Distance-IoU loss ``1 - IoU + (centre distance / enclosing length)^2`` for segments
    given as distances ``[N, 2]`` from a common point -> ``[N]``."""
    pred, target = pred.float(), target.float()
    enclosing = torch.maximum(pred[:, 0], target[:, 0]) + torch.maximum(pred[:, 1], target[:, 1])
    rho = 0.5 * ((pred[:, 1] - pred[:, 0]) - (target[:, 1] - target[:, 0]))
    return 1.0 - center_iou(pred, target, eps) + (rho / enclosing.clamp(min=eps)) ** 2


def update_loss_normalizer(normalizer: float, num_pos: int, momentum: float = 0.9) -> float:
    """Running normalizer ``momentum * normalizer + (1 - momentum) * max(num_pos, 1)``."""
    return momentum * normalizer + (1.0 - momentum) * max(num_pos, 1)


def detection_losses(
    cls_logits: Sequence[Tensor],
    start_logits: Sequence[Tensor],
    end_logits: Sequence[Tensor],
    offsets: Sequence[Tensor],
    masks: Sequence[Tensor],
    cls_targets: Tensor,
    reg_targets: Tensor,
    normalizer: float,
    num_bins: int,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    iou_weight_power: float = 0.2,
) -> dict[str, Tensor]:
    """TriDet classification and regression losses of a batch.

    Per level: ``cls/start/end [B, T_l, C]``, ``offsets [B, T_l, 2, num_bins + 1]``,
    ``masks [B, T_l]``; targets over the concatenated levels: ``cls_targets [B, P, C]``,
    ``reg_targets [B, P, 2]`` (stride units). Each positive (valid point, target class) pair is
    decoded with that class's boundary logits; its focal term is weighted by the detached
    ``IoU ** iou_weight_power`` and it adds a DIoU term. Both sums are divided by
    ``normalizer``. Returns ``{"cls", "reg"}`` (scalars).
    """
    valid = torch.cat(list(masks), dim=1)
    positive = (cls_targets > 0) & valid[..., None]
    weight = torch.ones_like(cls_targets)
    preds, gts = [], []
    start = 0
    for s, e, off, c in zip(start_logits, end_logits, offsets, cls_logits, strict=True):
        stop = start + c.shape[1]
        b, t, k = torch.nonzero(positive[:, start:stop], as_tuple=True)
        left, right = boundary_windows(s, e, num_bins)
        pred = trident_distances(left[b, t, k], right[b, t, k], off[b, t])
        gt = reg_targets[b, start + t]
        weight[b, start + t, k] = center_iou(pred.detach(), gt).float() ** iou_weight_power
        preds.append(pred)
        gts.append(gt)
        start = stop
    if start != cls_targets.shape[1]:
        raise FustalError(f"targets: {cls_targets.shape[1]} points for {start} output positions")
    focal = sigmoid_focal_loss(
        torch.cat(list(cls_logits), 1), cls_targets, focal_alpha, focal_gamma
    )
    cls_loss = (focal * weight)[valid].sum() / normalizer
    reg_loss = center_diou_loss(torch.cat(preds), torch.cat(gts)).sum() / normalizer
    return {"cls": cls_loss, "reg": reg_loss}


def video_level_loss(
    logits: Tensor, mask: Tensor, video_labels: Tensor, topk_divisor: int = 5
) -> Tensor:
    """FuSTAL's video-level loss on level-0 class logits.

    ``logits [B, T, C]`` (dropout already applied), ``mask [B, T]``, ``video_labels [B, C]``:
    per video the mean of the top ``k = max(valid_length // topk_divisor, 1)`` logits over its
    valid time, softmax over classes, BCE against ``labels / labels.sum()`` averaged over
    classes, then over the videos that have at least one label (0 if none).
    """
    valid_len = mask.sum(dim=1)
    if bool((valid_len == 0).any()):
        raise FustalError("video-level loss: a video in the batch has no valid time step")
    k = (valid_len // topk_divisor).clamp(min=1)
    masked = logits.float().masked_fill(~mask[..., None], float("-inf"))
    top = masked.topk(int(k.max()), dim=1).values
    chosen = torch.arange(top.shape[1], device=k.device)[None, :] < k[:, None]
    mean = torch.where(chosen[..., None], top, torch.zeros_like(top)).sum(1) / k[:, None]
    scores = torch.softmax(mean, dim=-1)
    totals = video_labels.float().sum(dim=-1, keepdim=True)
    labelled = totals[:, 0] > 0
    if not bool(labelled.any()):
        return logits.sum() * 0.0
    target = video_labels.float()[labelled] / totals[labelled]
    return F.binary_cross_entropy(scores[labelled], target, reduction="none").mean(-1).mean()
