"""Model EMA (mean teacher) as in the research code: a copy of the student made when training
starts, blended after every optimizer step, never copied again.

``torch.optim.swa_utils.AveragedModel`` copies the model at its first update instead of
blending, which leaves the teacher one step ahead of the research schedule; this module is the
research behaviour with an optional decay warm-up.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn


def ema_decay_at(step: int, decay: float, warmup: bool = False) -> float:
    """Decay used by the update after ``step`` earlier updates: ``decay``, or with ``warmup``
    ``min(decay, (1 + step) / (10 + step))`` (small at first, so that the teacher forgets its
    initialization within a few hundred steps)."""
    return min(decay, (1.0 + step) / (10.0 + step)) if warmup else decay


def initial_share(steps: int, decay: float, warmup: bool = False) -> float:
    """Weight the teacher still gives to its initial copy after ``steps`` updates:
    ``prod_t decay_t`` (``decay ** steps`` without warm-up)."""
    if not warmup:
        return decay**steps
    log_share = sum(math.log(ema_decay_at(t, decay, True)) for t in range(steps))
    return math.exp(log_share)


def decay_for_share(steps: int, share: float = 0.05) -> float:
    """The largest constant decay whose teacher keeps at most ``share`` of its initialization
    after ``steps`` updates: ``share ** (1 / steps)``."""
    return share ** (1.0 / max(steps, 1))


class ModelEMA(nn.Module):
    """Exponential moving average of ``model``'s parameters and floating-point buffers.

    ``module`` is a deep copy of ``model`` (gradients off). :meth:`update` blends
    ``ema = d * ema + (1 - d) * model`` with ``d = ema_decay_at(updates, decay, warmup)``; the
    update count is a buffer, so a checkpoint restores the schedule.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = False) -> None:
        super().__init__()
        self.module = copy.deepcopy(model)
        self.module.requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.updates: Tensor
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        # host-side copy of ``updates`` (reading the buffer would synchronise with the device)
        self.num_updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend ``model`` into the average (one optimizer step)."""
        decay = ema_decay_at(self.num_updates, self.decay, self.warmup)
        ema_float, model_float = [], []
        for ema_t, model_t in zip(
            self.module.state_dict().values(), model.state_dict().values(), strict=True
        ):
            if ema_t.is_floating_point():
                ema_float.append(ema_t)
                model_float.append(model_t.detach())
            else:
                ema_t.copy_(model_t)
        if ema_float:
            torch._foreach_mul_(ema_float, decay)
            torch._foreach_add_(ema_float, model_float, alpha=1.0 - decay)
        self.updates += 1
        self.num_updates += 1

    def initial_share(self) -> float:
        """The teacher's remaining share of its initial weights."""
        return initial_share(self.num_updates, self.decay, self.warmup)
