"""Generator losses: video-level action loss, snippet contrast and cross-video contrast."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fustal.errors import FustalError
from fustal.generator.mining import Snippets


def contrast_matrix(s: Snippets, temperature: float = 0.07) -> Tensor:
    """Refinement NCE terms of every (query video, key video) pair of a batch -> ``[B, B]``.

    ``T[q, k] = NCE(mean HA_q, mean EA_k, EB_k) + NCE(mean HB_q, mean EB_k, EA_k)``: hard
    snippets of video ``q`` against the easy snippets of video ``k`` (the diagonal is the
    within-video snippet contrast). Dense over the batch, so no data-dependent shapes.
    """
    hard_act = F.normalize(s.hard_act.mean(dim=1), dim=-1)  # [B, H]
    hard_bkg = F.normalize(s.hard_bkg.mean(dim=1), dim=-1)
    easy_act = F.normalize(s.easy_act, dim=-1)  # [B, k, H]
    easy_bkg = F.normalize(s.easy_bkg, dim=-1)
    key_act = F.normalize(s.easy_act.mean(dim=1), dim=-1)
    key_bkg = F.normalize(s.easy_bkg.mean(dim=1), dim=-1)

    def nce(query: Tensor, key: Tensor, negatives: Tensor) -> Tensor:
        positive = query @ key.T  # [B_q, B_k]
        negative = torch.einsum("qh,kmh->qkm", query, negatives)
        logits = torch.cat((positive[..., None], negative), dim=-1) / temperature
        return torch.logsumexp(logits, dim=-1) - logits[..., 0]

    return nce(hard_act, key_act, easy_bkg) + nce(hard_bkg, key_bkg, easy_act)


def same_label_mask(labels: Tensor) -> Tensor:
    """``[B, B]`` bool: videos ``i != j`` whose label vectors are identical (``labels [B, C]``)."""
    if labels.dim() != 2:
        raise FustalError(f"labels: expected [B, C], got shape {tuple(labels.shape)}")
    same = (labels.unsqueeze(1) == labels.unsqueeze(0)).all(dim=-1)
    return same & ~torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)


def cross_video_contrast(
    terms: Tensor, labels: Tensor, weight: float = 0.2
) -> tuple[Tensor, Tensor]:
    """Cross-video contrast of a batch from its :func:`contrast_matrix` ``terms [B, B]``.

    Every unordered pair (i, j) of videos with identical labels contributes the mean of its two
    directions (hard snippets of j against easy snippets of i, and of i against j), weighted
    ``weight / P`` with P the number of pairs. Returns ``(loss, P)`` as tensors (loss 0 when
    ``P == 0``).
    """
    mask = same_label_mask(labels).to(terms.dtype)
    num_pairs = mask.sum() / 2
    total = (terms * mask).sum() / 2  # each pair's two directions, averaged
    return total * weight / num_pairs.clamp(min=1.0), num_pairs


def action_loss(video_scores: Tensor, labels: Tensor) -> Tensor:
    """BCE of video scores against the normalized label ``y / y.sum()``.

    video_scores, labels: ``[B, C]`` (scores in [0, 1], labels multi-hot with at least one
    positive per row: the data layer guarantees it) -> scalar mean over ``B * C``, in float32.
    """
    if video_scores.shape != labels.shape or labels.dim() != 2:
        raise FustalError(
            f"action_loss: video_scores {tuple(video_scores.shape)} and labels "
            f"{tuple(labels.shape)} must both be [B, C]"
        )
    labels = labels.float()
    totals = labels.sum(dim=1, keepdim=True)
    return F.binary_cross_entropy(video_scores.float(), labels / totals)
