"""Easy and hard snippet mining from the actionness sequence (METHOD.md section 2).

All functions are batched over videos and time; nothing loops over videos or steps.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from fustal.errors import FustalError


class Snippets(NamedTuple):
    """Mined snippet embeddings of a batch.

    easy_act, easy_bkg: ``[B, k_easy, H]``; hard_act, hard_bkg: ``[B, k_hard, H]``.
    """

    easy_act: Tensor
    easy_bkg: Tensor
    hard_act: Tensor
    hard_bkg: Tensor


def snippet_count(num_steps: int, ratio: int) -> int:
    """Number of snippets to take from ``num_steps`` steps: ``num_steps // ratio``, at least 1."""
    if ratio < 1:
        raise FustalError(f"snippet ratio: must be >= 1, got {ratio}")
    return max(num_steps // ratio, 1)


def _check_mask(mask: Tensor, width: int) -> None:
    if mask.dim() != 2:
        raise FustalError(f"mask: expected [B, N], got shape {tuple(mask.shape)}")
    if width < 1:
        raise FustalError(f"structuring element width: must be >= 1, got {width}")


def _window_any(mask: Tensor, left: int, right: int, pad_value: bool) -> Tensor:
    """``out[b, i] = any(mask[b, i - left : i + right + 1])``, outside read as ``pad_value``.

    mask: ``[B, N]`` bool -> ``[B, N]`` bool.
    """
    padded = F.pad(mask.float().unsqueeze(1), (left, right), value=float(pad_value))
    return F.max_pool1d(padded, kernel_size=left + right + 1, stride=1).squeeze(1) > 0


def binary_erosion_1d(mask: Tensor, width: int) -> Tensor:
    """Per-row binary erosion, identical to ``scipy.ndimage.binary_erosion(mask,
    structure=np.ones((1, width)))`` (border value 0, origin at ``width // 2``).

    mask: ``[B, N]`` bool -> ``[B, N]`` bool; output step ``i`` is set when all of
    ``mask[i - width // 2 : i - width // 2 + width]`` are set (steps outside count as unset).
    """
    _check_mask(mask, width)
    centre = width // 2
    return ~_window_any(~mask.bool(), centre, width - 1 - centre, pad_value=True)


def binary_dilation_1d(mask: Tensor, width: int) -> Tensor:
    """Per-row binary dilation, identical to ``scipy.ndimage.binary_dilation(mask,
    structure=np.ones((1, width)))`` (scipy reflects the element: window is shifted right
    for even widths).

    mask: ``[B, N]`` bool -> ``[B, N]`` bool; output step ``i`` is set when any of
    ``mask[i - (width - 1 - width // 2) : i + width // 2 + 1]`` is set.
    """
    _check_mask(mask, width)
    centre = width // 2
    return _window_any(mask.bool(), width - 1 - centre, centre, pad_value=False)


def median_binarize(actionness: Tensor) -> Tensor:
    """``actionness > median`` per video with numpy's median (mean of the two middle values).

    actionness: ``[B, N]`` -> ``[B, N]`` bool. The midpoint is computed as ``(lo + hi) / 2`` in
    the input dtype, exactly as ``np.median`` does.
    """
    if actionness.dim() != 2 or actionness.shape[1] < 1:
        raise FustalError(f"actionness: expected [B, N>=1], got shape {tuple(actionness.shape)}")
    values = actionness.detach()
    ordered = values.sort(dim=1).values
    num_steps = values.shape[1]
    lo = ordered[:, (num_steps - 1) // 2]
    hi = ordered[:, num_steps // 2]
    median = (lo + hi) / 2
    return values > median.unsqueeze(1)


def hard_regions(actionness: Tensor, m: int = 3, M: int = 6) -> tuple[Tensor, Tensor]:
    """Inner and outer boundary regions of the median-binarized actionness.

    actionness: ``[B, N]`` -> ``(inner, outer)``, each ``[B, N]`` in the actionness dtype with
    ``inner = erode_m - erode_M`` and ``outer = dilate_M - dilate_m``.
    """
    binary = median_binarize(actionness)
    dtype = actionness.dtype
    inner = binary_erosion_1d(binary, m).to(dtype) - binary_erosion_1d(binary, M).to(dtype)
    outer = binary_dilation_1d(binary, M).to(dtype) - binary_dilation_1d(binary, m).to(dtype)
    return inner, outer


def gather_top_k(scores: Tensor, emb: Tensor, k: int) -> Tensor:
    """Embeddings of the ``k`` highest-scoring steps per video.

    scores: ``[B, N]``, emb: ``[B, N, H]`` -> ``[B, k, H]`` (highest score first).
    """
    index = scores.topk(k, dim=1).indices
    return torch.gather(emb, 1, index.unsqueeze(-1).expand(-1, -1, emb.shape[-1]))


def mine_snippets(
    emb: Tensor,
    actionness: Tensor,
    r_easy: int = 5,
    r_hard: int = 20,
    m: int = 3,
    M: int = 6,
    drop_p: float = 0.6,
) -> Snippets:
    """Easy and hard action/background snippets of each video.

    emb: ``[B, N, H]``, actionness: ``[B, N]``. Easy: top ``k_easy = N // r_easy`` steps of
    ``a * mask`` and ``(max(a) - a) * mask`` with one inverted-dropout mask (``drop_p``) shared
    by both. Hard: top ``k_hard = N // r_hard`` steps of ``a * inner`` and ``a * outer`` (see
    :func:`hard_regions`). Both counts are at least 1.
    """
    if emb.dim() != 3 or actionness.shape != emb.shape[:2]:
        raise FustalError(
            f"mine_snippets: emb {tuple(emb.shape)} and actionness {tuple(actionness.shape)} "
            "must be [B, N, H] and [B, N]"
        )
    num_steps = emb.shape[1]
    k_easy = snippet_count(num_steps, r_easy)
    k_hard = snippet_count(num_steps, r_hard)

    keep = F.dropout(torch.ones_like(actionness), p=drop_p, training=True)
    reverse = actionness.max(dim=1, keepdim=True).values - actionness
    easy_act = gather_top_k(actionness * keep, emb, k_easy)
    easy_bkg = gather_top_k(reverse * keep, emb, k_easy)

    inner, outer = hard_regions(actionness, m, M)
    hard_act = gather_top_k(actionness * inner, emb, k_hard)
    hard_bkg = gather_top_k(actionness * outer, emb, k_hard)
    return Snippets(easy_act, easy_bkg, hard_act, hard_bkg)
