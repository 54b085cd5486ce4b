"""Heads shared over pyramid levels: classification / boundary heads and the centre-offset head."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from fustal.errors import FustalError
from fustal.student.blocks import ChannelLayerNorm, MaskedConv1d, Scale


class ConvTower(nn.Module):
    """``num_layers - 1`` masked convs (no bias) + LN + ReLU, then an output masked conv."""

    def __init__(
        self, input_dim: int, head_dim: int, out_dim: int, num_layers: int = 3, kernel: int = 3
    ):
        super().__init__()
        if num_layers < 1:
            raise FustalError(f"head_num_layers: must be >= 1, got {num_layers}")
        dims = [input_dim] + [head_dim] * (num_layers - 1)
        self.convs = nn.ModuleList(
            MaskedConv1d(dims[i], dims[i + 1], kernel, bias=False) for i in range(num_layers - 1)
        )
        self.norms = nn.ModuleList(ChannelLayerNorm(head_dim) for _ in range(num_layers - 1))
        self.out = MaskedConv1d(dims[-1], out_dim, kernel)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """``x [B, E, T]``, ``mask [B, T]`` -> ``[B, out_dim, T]``."""
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = norm(conv(x, mask)).relu()
        return self.out(x, mask)


class ClassHead(nn.Module):
    """Per-class logits on every level; output bias ``-log((1 - p) / p)`` with ``p = prior_prob``.

    ``detach=True`` stops gradients into the features (TriDet's start/end boundary heads).
    """

    def __init__(
        self,
        input_dim: int,
        head_dim: int,
        num_classes: int,
        num_layers: int = 3,
        kernel: int = 3,
        prior_prob: float = 0.01,
        detach: bool = False,
    ):
        super().__init__()
        if not 0.0 < prior_prob < 1.0:
            raise FustalError(f"prior_prob: must lie in (0, 1), got {prior_prob}")
        self.detach = detach
        self.tower = ConvTower(input_dim, head_dim, num_classes, num_layers, kernel)
        nn.init.constant_(
            cast(Tensor, self.tower.out.conv.bias), -math.log((1.0 - prior_prob) / prior_prob)
        )

    def forward(self, feats: list[Tensor], masks: list[Tensor]) -> list[Tensor]:
        """Per level ``[B, E, T_l]``, ``[B, T_l]`` -> logits ``[B, T_l, C]``."""
        return [
            self.tower(f.detach() if self.detach else f, m).transpose(1, 2)
            for f, m in zip(feats, masks, strict=True)
        ]


class OffsetHead(nn.Module):
    """Centre-offset head of the Trident head: ``2 * (num_bins + 1)`` channels, times a learnable
    per-level scale, then ReLU. Output per level ``[B, T_l, 2, num_bins + 1]`` (left, right)."""

    def __init__(
        self,
        input_dim: int,
        head_dim: int,
        num_levels: int,
        num_bins: int = 16,
        num_layers: int = 3,
        kernel: int = 3,
        scale_init: float = 1.0,
    ):
        super().__init__()
        self.num_bins = num_bins
        self.tower = ConvTower(input_dim, head_dim, 2 * (num_bins + 1), num_layers, kernel)
        self.scales = nn.ModuleList(Scale(scale_init) for _ in range(num_levels))

    def forward(
        self, feats: list[Tensor], masks: list[Tensor], levels: Sequence[int] | None = None
    ) -> list[Tensor]:
        """Per level ``[B, E, T_l]``, ``[B, T_l]`` -> ``[B, T_l, 2, num_bins + 1]`` (>= 0);
        ``levels``: the pyramid levels ``feats`` come from (default: all, in order)."""
        scales = self.scales if levels is None else [self.scales[i] for i in levels]
        return [
            torch.relu(scale(self.tower(f, m))).transpose(1, 2).unflatten(2, (2, self.num_bins + 1))
            for scale, f, m in zip(scales, feats, masks, strict=True)
        ]
