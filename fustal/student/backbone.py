"""SGP backbone (embedding convs, full-resolution stem, downsampling branch) and identity neck."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from fustal.errors import FustalError
from fustal.student.blocks import ChannelLayerNorm, MaskedConv1d, SGPBlock


class SGPBackbone(nn.Module):
    """``arch = (n_embed, n_stem, n_branch)``: ``n_embed`` masked convs (no bias) + LN + ReLU,
    ``n_stem`` SGP blocks at full resolution (no drop path), then ``n_branch`` SGP blocks that
    each downsample by ``scale_factor`` (with drop path). Returns ``n_branch + 1`` levels."""

    def __init__(
        self,
        feature_dim: int,
        embd_dim: int,
        arch: Sequence[int],
        embd_kernel: int,
        drop_path: float,
        **block: Any,
    ):
        """``block``: the :class:`SGPBlock` settings of every block (``mlp_dim``, ``window``,
        ``k``, ``scale_factor``, ...; their defaults are :class:`~fustal.student.TriDet`'s)."""
        super().__init__()
        if len(arch) != 3 or min(arch) < 0 or arch[0] < 1:
            raise FustalError(f"arch: expected (n_embed >= 1, n_stem, n_branch), got {arch}")
        n_embed, n_stem, n_branch = (int(a) for a in arch)
        self.embed = nn.ModuleList(
            MaskedConv1d(feature_dim if i == 0 else embd_dim, embd_dim, embd_kernel, bias=False)
            for i in range(n_embed)
        )
        self.embed_norm = nn.ModuleList(ChannelLayerNorm(embd_dim) for _ in range(n_embed))
        block["dim"] = embd_dim
        self.stem = nn.ModuleList(SGPBlock(**block) for _ in range(n_stem))
        self.branch = nn.ModuleList(
            SGPBlock(**block, downsample=True, drop_path=drop_path) for _ in range(n_branch)
        )

    def forward(self, x: Tensor, mask: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """``x [B, D, T]``, ``mask [B, T]`` -> per level ``[B, E, T_l]`` and ``[B, T_l]``."""
        for conv, norm in zip(self.embed, self.embed_norm, strict=True):
            x = norm(conv(x, mask)).relu()
        for block in self.stem:
            x, mask = block(x, mask)
        feats, masks = [x], [mask]
        for block in self.branch:
            x, mask = block(x, mask)
            feats.append(x)
            masks.append(mask)
        return feats, masks


class IdentityNeck(nn.Module):
    """Identity feature pyramid followed by one channel LayerNorm per level."""

    def __init__(self, dim: int, num_levels: int):
        super().__init__()
        self.norms = nn.ModuleList(ChannelLayerNorm(dim) for _ in range(num_levels))

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        """Per level ``[B, E, T_l]`` -> ``[B, E, T_l]``."""
        return [norm(f) for norm, f in zip(self.norms, feats, strict=True)]
