"""Generator losses: video-level action loss, snippet contrast and cross-video contrast."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fustal.errors import FustalError
from fustal.generator.mining import Snippets


def info_nce_per_sample(
    q: Tensor, k: Tensor, negatives: Tensor, temperature: float = 0.07
) -> Tensor:
    """InfoNCE of each row: cross-entropy (target 0) of ``[q.k, q.n_1, ..., q.n_K] / T``.

    q, k: ``[B, H]``, negatives: ``[B, K, H]``, all L2-normalized along H -> ``[B]``.
    """
    q = F.normalize(q, dim=-1)
    k = F.normalize(k, dim=-1)
    negatives = F.normalize(negatives, dim=-1)
    positive = (q * k).sum(dim=-1, keepdim=True)
    negative = torch.einsum("bh,bkh->bk", q, negatives)
    logits = torch.cat([positive, negative], dim=1) / temperature
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target, reduction="none")


def info_nce(q: Tensor, k: Tensor, negatives: Tensor, temperature: float = 0.07) -> Tensor:
    """Mean over the batch of :func:`info_nce_per_sample`; q, k ``[B, H]``, negatives
    ``[B, K, H]`` -> scalar."""
    return info_nce_per_sample(q, k, negatives, temperature).mean()


def _refinement_terms(
    hard_act: Tensor,
    hard_bkg: Tensor,
    easy_act: Tensor,
    easy_bkg: Tensor,
    temperature: float,
) -> Tensor:
    """Per-row ``NCE(mean HA, mean EA, EB) + NCE(mean HB, mean EB, EA)``; all ``[R, k, H]`` ->
    ``[R]``."""
    action = info_nce_per_sample(hard_act.mean(dim=1), easy_act.mean(dim=1), easy_bkg, temperature)
    background = info_nce_per_sample(
        hard_bkg.mean(dim=1), easy_bkg.mean(dim=1), easy_act, temperature
    )
    return action + background


def snippet_contrast(s: Snippets, temperature: float = 0.07) -> Tensor:
    """``NCE(mean HA, mean EA, EB) + NCE(mean HB, mean EB, EA)`` within each video, each NCE
    averaged over the batch -> scalar."""
    return _refinement_terms(s.hard_act, s.hard_bkg, s.easy_act, s.easy_bkg, temperature).mean()


def same_label_pairs(labels: Tensor) -> Tensor:
    """Unordered pairs of videos with identical label vectors.

    labels: ``[B, C]`` -> ``[P, 2]`` long with ``i < j``, ordered by ``i`` then ``j``.
    """
    if labels.dim() != 2:
        raise FustalError(f"labels: expected [B, C], got shape {tuple(labels.shape)}")
    same = (labels.unsqueeze(1) == labels.unsqueeze(0)).all(dim=-1)
    return torch.triu(same, diagonal=1).nonzero()


def cross_video_contrast(
    s: Snippets, pairs: Tensor, weight: float = 0.2, temperature: float = 0.07
) -> Tensor:
    """Cross-video contrast summed over pairs, each pair weighted ``weight / P``.

    s: snippets of the batch; pairs: ``[P, 2]`` long. A pair (i, j) contributes the refinement
    NCE terms with hard snippets of j against easy snippets of i and with hard snippets of i
    against easy snippets of j, each NCE averaged over these two directions. -> scalar
    (zero when ``P == 0``).
    """
    if pairs.dim() != 2 or pairs.shape[1] != 2:
        raise FustalError(f"pairs: expected [P, 2], got shape {tuple(pairs.shape)}")
    num_pairs = pairs.shape[0]
    if num_pairs == 0:
        return s.easy_act.new_zeros(())
    pairs = pairs.to(device=s.easy_act.device, dtype=torch.long)
    query_rows = torch.cat([pairs[:, 1], pairs[:, 0]])
    key_rows = torch.cat([pairs[:, 0], pairs[:, 1]])
    terms = _refinement_terms(
        s.hard_act[query_rows],
        s.hard_bkg[query_rows],
        s.easy_act[key_rows],
        s.easy_bkg[key_rows],
        temperature,
    )
    per_pair = terms.view(2, num_pairs).mean(dim=0)
    return per_pair.sum() * (weight / num_pairs)


def action_loss(video_scores: Tensor, labels: Tensor) -> Tensor:
    """BCE of video scores against the normalized label ``y / y.sum()``.

    video_scores, labels: ``[B, C]`` (scores in [0, 1], labels multi-hot with at least one
    positive per row) -> scalar mean over ``B * C``.
    """
    if video_scores.shape != labels.shape or labels.dim() != 2:
        raise FustalError(
            f"action_loss: video_scores {tuple(video_scores.shape)} and labels "
            f"{tuple(labels.shape)} must both be [B, C]"
        )
    totals = labels.sum(dim=1, keepdim=True)
    if bool((totals <= 0).any()):
        rows = (totals.squeeze(1) <= 0).nonzero().flatten().tolist()
        raise FustalError(f"labels: rows {rows} have no positive class")
    return F.binary_cross_entropy(video_scores, labels / totals)
