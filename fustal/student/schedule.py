"""The student's learning-rate schedule: the research code's linear warmup, then constant (FuSTAL)
or cosine (the fully supervised TriDet schedule)."""

from __future__ import annotations

import math
from functools import partial

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from fustal.errors import FustalError

SCHEDULES = ("constant", "cosine")


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Learning-rate multiplier of optimizer step ``step`` (0-based): linear warmup
    ``step / (warmup_steps - 1)`` over the first ``warmup_steps`` steps (0 at the first step,
    1 at step ``warmup_steps - 1``, as the research code's scheduler), then constant or cosine
    decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return step / max(warmup_steps - 1, 1)
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_schedule(
    optimizer: Optimizer,
    steps_per_epoch: int,
    total_steps: int,
    warmup_epochs: float = 1.0,
    schedule: str = "constant",
) -> LambdaLR:
    """Per-step :class:`LambdaLR` of :func:`lr_factor` with ``warmup_epochs`` epochs of
    warmup (configured as a partial; the module supplies the optimizer and the step counts)."""
    if schedule not in SCHEDULES:
        raise FustalError(f"schedule: expected one of {SCHEDULES}, got {schedule!r}")
    warmup = round(warmup_epochs * steps_per_epoch)
    return LambdaLR(
        optimizer,
        partial(lr_factor, warmup_steps=warmup, total_steps=total_steps, schedule=schedule),
    )
