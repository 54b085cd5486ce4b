"""Choosing a training stage's weights on the held-out videos (``generator.select``,
``student.select``), never on the test labels (METHOD.md section 8).

With ``select=best`` the stage's validation loop scores the held-out training videos of
``validation=heldout|video_labels``; a :class:`BestCheckpoint` per evaluated variant (Lightning's
``ModelCheckpoint`` with a monitored metric) keeps the weights of the evaluation with the highest
held-out metric, an optional ``EarlyStopping`` ends training after ``patience`` evaluations
without improvement, and after training the stage restores the chosen weights
(:func:`chosen`) before it predicts. Both callbacks keep their state in the resume checkpoint,
so a resumed run chooses what an uninterrupted one does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

from fustal.metrics.shape import VIDEO_MAP


def selection_metric(mode: str) -> str:
    """The held-out metric a choice maximizes: the detection ``avg`` mAP (``heldout``), the
    video-level ``video_map`` (``video_labels``)."""
    return VIDEO_MAP if mode == "video_labels" else "avg"


def monitored(variant: str, mode: str) -> str:
    """The logged name of ``variant``'s held-out metric (e.g. ``generator/val/avg``)."""
    return f"{variant}/val/{selection_metric(mode)}"


class BestCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` of the highest value of ``variant``'s held-out metric (the earliest of
    equal ones), written to ``<dirpath>/best_<variant>.ckpt`` when a validation ends, from
    training epoch ``start_epoch`` on (the EMA copy: the distillation phase)."""

    def __init__(self, dirpath: Path, variant: str, mode: str, start_epoch: int = 0) -> None:
        super().__init__(
            dirpath=str(dirpath),
            filename=f"best_{variant}",
            monitor=monitored(variant, mode),
            mode="max",
            save_top_k=1,
            save_on_train_epoch_end=False,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        )
        self.variant = variant
        self.start_epoch = start_epoch

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch >= self.start_epoch:
            super().on_validation_end(trainer, pl_module)


def selection_callbacks(
    dirpath: Path, variants: dict[str, int], mode: str, patience: int | None = None
) -> list[pl.Callback]:
    """A :class:`BestCheckpoint` per variant (``{variant: start_epoch}``) and, with ``patience``,
    an ``EarlyStopping`` on the first variant's held-out metric."""
    callbacks: list[pl.Callback] = [
        BestCheckpoint(dirpath, variant, mode, start) for variant, start in variants.items()
    ]
    if patience is not None:
        first = next(iter(variants))
        callbacks.append(
            EarlyStopping(
                monitored(first, mode),
                mode="max",
                patience=patience,
                check_on_train_epoch_end=False,
            )
        )
    return callbacks


@dataclass(frozen=True)
class Choice:
    """The weights a :class:`BestCheckpoint` kept: its ``state_dict``, the training ``step``
    and ``epoch`` (0-based) they were evaluated at, and their held-out ``value``."""

    state_dict: dict[str, torch.Tensor]
    step: int
    epoch: int
    value: float


def chosen(trainer: pl.Trainer) -> dict[str, Choice]:
    """The choice of every :class:`BestCheckpoint` of ``trainer`` that saw an evaluation, by
    variant (read from its checkpoint file)."""
    out = {}
    for callback in trainer.checkpoint_callbacks:
        if not isinstance(callback, BestCheckpoint) or not callback.best_model_path:
            continue
        saved: dict[str, Any] = torch.load(
            callback.best_model_path, map_location="cpu", weights_only=False
        )
        score = callback.best_model_score
        out[callback.variant] = Choice(
            saved["state_dict"],
            int(saved["global_step"]),
            int(saved["epoch"]),
            float(score) if score is not None else float("nan"),
        )
    return out
