"""CoLA-style generator network: embedding, class activation sequence, video scores."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from fustal.errors import FustalError
from fustal.generator.mining import snippet_count


class GeneratorOutput(NamedTuple):
    """Generator outputs for a batch of ``B`` videos of ``N`` steps.

    emb ``[B, N, H]``, cas ``[B, N, C]``, actionness ``[B, N]``, video_scores ``[B, C]``.
    """

    emb: Tensor
    cas: Tensor
    actionness: Tensor
    video_scores: Tensor


def video_scores_from_cas(cas: Tensor, r_easy: int = 5, valid: Tensor | None = None) -> Tensor:
    """Softmax over classes of the per-class mean of the top ``N // r_easy`` CAS values.

    cas: ``[B, N, C]`` -> ``[B, C]`` (``k`` is at least 1). With ``valid [B]`` (steps per video
    before zero padding), only the first ``valid[b]`` steps count and ``k = valid[b] // r_easy``.
    """
    if valid is None:
        count = snippet_count(cas.shape[1], r_easy)
        return cas.topk(count, dim=1).values.mean(dim=1).softmax(dim=-1)
    if r_easy < 1:
        raise FustalError(f"r_easy: must be >= 1, got {r_easy}")
    num_steps = cas.shape[1]
    valid = valid.to(cas.device)
    if valid.shape != cas.shape[:1] or bool(((valid < 1) | (valid > num_steps)).any()):
        raise FustalError(f"valid: expected [B] lengths in [1, {num_steps}], got {valid.tolist()}")
    steps = torch.arange(num_steps, device=cas.device)
    inside = steps < valid.unsqueeze(1)
    ordered = cas.masked_fill(~inside.unsqueeze(-1), float("-inf")).sort(dim=1, descending=True)
    k = torch.div(valid, r_easy, rounding_mode="floor").clamp(min=1)
    taken = ordered.values.masked_fill(~(steps < k.unsqueeze(1)).unsqueeze(-1), 0.0)
    return (taken.sum(dim=1) / k.unsqueeze(1).to(cas.dtype)).softmax(dim=-1)


class GeneratorNet(nn.Module):
    """Conv1d(D, H, 3) + ReLU embedding; Dropout + Conv1d(H, C, 1, no bias) + ReLU classifier."""

    def __init__(
        self,
        feature_dim: int,
        num_classes: int,
        hidden_dim: int = 2048,
        dropout: float = 0.7,
        r_easy: int = 5,
    ) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.r_easy = r_easy
        self.embed = nn.Sequential(
            nn.Conv1d(feature_dim, hidden_dim, kernel_size=3, padding=1), nn.ReLU()
        )
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Conv1d(hidden_dim, num_classes, kernel_size=1, bias=False),
            nn.ReLU(),
        )

    def forward(self, x: Tensor, valid: Tensor | None = None) -> GeneratorOutput:
        """x: ``[B, N, D]`` snippet features -> :class:`GeneratorOutput`.

        ``valid [B]``: steps per video before zero padding; video scores then ignore the padded
        steps (emb, cas and actionness of valid steps do not depend on the padding).
        """
        if x.dim() != 3 or x.shape[-1] != self.feature_dim:
            raise FustalError(
                f"features: expected [B, N, {self.feature_dim}], got shape {tuple(x.shape)}"
            )
        hidden = self.embed(x.transpose(1, 2))
        cas = self.classifier(hidden).transpose(1, 2)
        return GeneratorOutput(
            emb=hidden.transpose(1, 2),
            cas=cas,
            actionness=cas.sum(dim=-1),
            video_scores=video_scores_from_cas(cas, self.r_easy, valid),
        )
