"""Fault injection for the kill-and-resume tests, added to a run from the command line as a
Lightning callback (``+callbacks.fault={_target_:tests.faults.KillAt,stage:...,point:...}``):
production code has no hook for it."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytorch_lightning as pl

from fustal.generator.module import GeneratorModule


class KillAt(pl.Callback):
    """SIGKILL this process (no cleanup, no ``finally``) in the ``stage`` (``generator`` or
    ``student``) at ``point``: ``step<N>`` after optimizer step N, ``fitted`` when training
    ends."""

    def __init__(self, stage: str, point: str) -> None:
        self.stage = stage
        self.point = point

    def _here(self, pl_module: pl.LightningModule, point: str) -> None:
        stage = "generator" if isinstance(pl_module, GeneratorModule) else "student"
        if (stage, point) == (self.stage, self.point):
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        self._here(pl_module, f"step{trainer.global_step}")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._here(pl_module, "fitted")
