"""Temporal IoU of segments ``[start, end]`` (intersection over union, no +1), written once for
the numpy code (metrics, filters) and once for the torch code (decoding). The torch twin uses
tensor methods only, so that importing this module imports no torch (``fustal.score`` is
numpy-only)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor


def tiou(s1: np.ndarray, e1: np.ndarray, s2: np.ndarray, e2: np.ndarray) -> np.ndarray:
    """Broadcast tIoU of segments ``[s1, e1]`` and ``[s2, e2]``; 0 where the union is empty."""
    inter = np.clip(np.minimum(e1, e2) - np.maximum(s1, s2), 0.0, None)
    union = (e1 - s1) + (e2 - s2) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def tiou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise tIoU of ``a [N, 2]`` and ``b [M, 2]``: ``[N, M]`` float64 (0 for a pair whose
    union is empty, e.g. two zero-length segments at one point)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 2)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 2)
    return tiou(a[:, None, 0], a[:, None, 1], b[None, :, 0], b[None, :, 1])


def segment_iou(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Broadcast tIoU of ``a [..., 2]`` and ``b [..., 2]`` -> ``[...]``, the union clamped at
    ``eps`` (the torch twin of :func:`tiou`, for batched decoding)."""
    inter = (a[..., 1].minimum(b[..., 1]) - a[..., 0].maximum(b[..., 0])).clamp(min=0)
    union = (a[..., 1] - a[..., 0]) + (b[..., 1] - b[..., 0]) - inter
    return inter / union.clamp(min=eps)
