"""Building blocks of the TriDet student: masked conv, channel LayerNorm, scales, SGP block.

Feature maps are ``[B, C, T]``; masks are ``[B, T]`` bool (True on valid time steps).
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from fustal.errors import FustalError


def odd_kernel(kernel_size: int, what: str) -> int:
    """Return ``kernel_size`` if it is a positive odd integer, else raise :class:`FustalError`."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise FustalError(f"{what}: kernel size must be a positive odd integer, got {kernel_size}")
    return kernel_size


class MaskedConv1d(nn.Module):
    """``Conv1d`` (stride 1, 'same' padding) whose output is zeroed on invalid time steps.

    The bias, if any, starts at zero.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True):
        super().__init__()
        kernel_size = odd_kernel(kernel_size, "MaskedConv1d")
        self.conv = nn.Conv1d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias
        )
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """``x [B, C_in, T]``, ``mask [B, T]`` -> ``[B, C_out, T]``."""
        return self.conv(x) * mask.unsqueeze(1).to(x.dtype)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of ``[B, C, T]`` maps (per time step), with affine."""

    def __init__(self, num_channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, T]`` -> ``[B, C, T]`` normalized over C, computed along C as the research
        code does (no transposes)."""
        centred = x - x.mean(dim=1, keepdim=True)
        variance = (centred * centred).mean(dim=1, keepdim=True)
        out = centred / torch.sqrt(variance + self.eps)
        return out * self.weight[:, None] + self.bias[:, None]


class Scale(nn.Module):
    """Multiply by one learnable scalar (initialized to ``init_value``)."""

    def __init__(self, init_value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init_value)))

    def forward(self, x: Tensor) -> Tensor:
        """Any shape -> same shape."""
        return x * self.scale


def drop_path(x: Tensor, drop_prob: float, training: bool) -> Tensor:
    """Stochastic depth per sample: zero whole samples of ``x [B, ...]`` with probability
    ``drop_prob`` and rescale the kept ones by ``1 / (1 - drop_prob)`` (identity in eval)."""
    if drop_prob <= 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    mask = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x * mask / keep


class AffineDropPath(nn.Module):
    """Drop path with a learnable per-channel scale (LayerScale) applied first.

    ``x [B, C, T]`` -> ``drop_path(scale[C] * x)``.
    """

    def __init__(self, num_channels: int, drop_prob: float, init_scale: float = 1e-4):
        super().__init__()
        self.drop_prob = drop_prob
        self.scale = nn.Parameter(torch.full((num_channels,), float(init_scale)))

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, T]`` -> ``[B, C, T]``."""
        return drop_path(x * self.scale[:, None], self.drop_prob, self.training)


class SGPBlock(nn.Module):
    """Scalable-granularity perception block (TriDet), optionally downsampling first.

    ``h = LN(x)``; ``out = fc(h) * phi + (conv_w(h) + conv_kw(h)) * psi(h) + h`` with depthwise
    convs and ``phi = relu(global_fc(mean_t(h)))``; ``y = x * mask + droppath(out)``;
    ``z = y + droppath(MLP(GroupNorm(y)))``. Drop path (with per-channel scales) only when
    ``drop_path > 0``.
    """

    def __init__(
        self,
        dim: int,
        mlp_dim: int,
        window: int,
        k: float,
        scale_factor: int,
        downsample_kernel: int,
        layer_scale_init: float,
        init_conv_vars: float,
        group_norm_groups: int,
        downsample: bool = False,
        drop_path: float = 0.0,
    ):
        super().__init__()
        window = odd_kernel(window, "SGP window")
        long_kernel = round((window + 1) * k) | 1  # made odd: an even size grows by 1
        if dim % group_norm_groups != 0:
            raise FustalError(
                f"SGPBlock: dim {dim} is not divisible by group_norm_groups {group_norm_groups}"
            )
        self.stride = scale_factor if downsample else 1
        self.pool: nn.Module = (
            nn.MaxPool1d(
                odd_kernel(downsample_kernel, "downsample"),
                stride=scale_factor,
                padding=downsample_kernel // 2,
            )
            if downsample
            else nn.Identity()
        )
        self.ln = ChannelLayerNorm(dim)
        self.gn = nn.GroupNorm(group_norm_groups, dim)
        self.psi = nn.Conv1d(dim, dim, window, padding=window // 2, groups=dim)
        self.fc = nn.Conv1d(dim, dim, 1, groups=dim)
        self.conv_w = nn.Conv1d(dim, dim, window, padding=window // 2, groups=dim)
        self.conv_kw = nn.Conv1d(dim, dim, long_kernel, padding=long_kernel // 2, groups=dim)
        self.global_fc = nn.Conv1d(dim, dim, 1, groups=dim)
        self.mlp = nn.Sequential(nn.Conv1d(dim, mlp_dim, 1), nn.GELU(), nn.Conv1d(mlp_dim, dim, 1))
        self.drop_out, self.drop_mlp = (
            AffineDropPath(dim, drop_path, layer_scale_init) if drop_path > 0.0 else nn.Identity()
            for _ in range(2)
        )
        for conv in self.branch_convs():
            nn.init.normal_(conv.weight, 0.0, init_conv_vars)
            nn.init.zeros_(cast(Tensor, conv.bias))
        for layer in (self.mlp[0], self.mlp[2]):
            nn.init.zeros_(cast(Tensor, layer.bias))
        # the branch weights' (address, version) when :meth:`branch_is_zero` last read them
        self._branch_state: tuple[tuple[int, int], ...] = ()
        self._branch_zero = False

    def branch_convs(self) -> tuple[nn.Conv1d, ...]:
        """The five depthwise convs of the granularity branch."""
        return (self.psi, self.fc, self.conv_w, self.conv_kw, self.global_fc)

    def branch_is_zero(self) -> bool:
        """Whether the branch convs are all zero. With zero weights and biases (the reference
        ``init_conv_vars = 0``) every gradient reaching them is zero too, so they stay zero and
        the branch output ``fc(h) * phi + (conv_w(h) + conv_kw(h)) * psi(h)`` is exactly 0:
        evaluation skips computing it. Read from the weights (one host read) whenever they
        changed since the last read: a tensor's version counter moves with every in-place write
        through it, a weight load, an optimizer step and an EMA update included, so a loaded or
        edited model is never judged by stale weights, and an unchanged one costs no sync."""
        params = [p for conv in self.branch_convs() for p in conv.parameters()]
        state = tuple((p.data_ptr(), p._version) for p in params)
        if state != self._branch_state:
            self._branch_state = state
            self._branch_zero = not bool(torch.cat([p.reshape(-1) for p in params]).any())
        return self._branch_zero

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``x [B, C, T]``, ``mask [B, T]`` -> ``([B, C, T / s], [B, T / s])``, s the stride."""
        if x.shape[-1] % self.stride != 0:
            raise FustalError(
                f"SGPBlock: length {x.shape[-1]} is not a multiple of the stride {self.stride}"
            )
        x = self.pool(x)
        mask = mask[:, :: self.stride]
        h = self.ln(x)
        if self.training or not self.branch_is_zero():
            phi = torch.relu(self.global_fc(h.mean(dim=-1, keepdim=True)))
            out = self.fc(h) * phi + (self.conv_w(h) + self.conv_kw(h)) * self.psi(h) + h
        else:
            out = h
        y = x * mask.unsqueeze(1).to(x.dtype) + self.drop_out(out)
        return y + self.drop_mlp(self.mlp(self.gn(y))), mask
