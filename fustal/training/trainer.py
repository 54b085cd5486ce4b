"""The Lightning ``Trainer`` of a stage: ``hydra.utils.instantiate`` of the ``trainer`` group
(any Trainer argument can be set from the command line) plus what the stage owns (its step or
epoch budget, its evaluation cadence, its checkpoint folder), with the ``callbacks`` and
``logger`` groups."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar

from fustal.errors import FustalError
from fustal.training.loggers import make_loggers

# Trainer arguments a stage sets itself, and where a user sets them instead
STAGE_OWNED = {
    "max_epochs": "student.epochs_pseudo and student.epochs_distill (student.full_epochs with"
    " supervision=full)",
    "min_epochs": "student.epochs_pseudo and student.epochs_distill",
    "max_steps": "generator.max_steps",
    "min_steps": "generator.max_steps",
    "val_check_interval": "generator.val_every",
    "check_val_every_n_epoch": "student.val_every",
    "gradient_clip_val": "student.gradient_clip_val",
    "callbacks": "the callbacks group (+callbacks.NAME={_target_:...})",
    "logger": "the logger group (logger=csv|tensorboard|wandb|none)",
    "enable_checkpointing": "the callbacks group (~callbacks.model_checkpoint: no resume)",
    "use_distributed_sampler": "nothing: fustal shards its data by rank itself",
    "default_root_dir": "hydra.run.dir",
}


def check_trainer_config(trainer_cfg: Mapping[str, Any]) -> None:
    """One-line :class:`FustalError` for a ``trainer`` key that is no Trainer argument or that
    a stage sets itself (naming the fustal key to use)."""
    accepted = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}
    for key in trainer_cfg:
        if key == "_target_":
            continue
        if key in STAGE_OWNED:
            raise FustalError(
                f"trainer.{key}: set per stage by fustal; use {STAGE_OWNED[key]} instead"
            )
        if key not in accepted:
            raise FustalError(f"trainer.{key}: not an argument of Lightning's Trainer")


def make_callbacks(
    cfg: DictConfig,
    checkpoint: Mapping[str, Any] | None,
    has_logger: bool,
    stage_callbacks: Sequence[pl.Callback] = (),
) -> list[pl.Callback]:
    """The ``callbacks`` group instantiated, then the stage's own ``stage_callbacks`` (the
    held-out choice of its weights), then the group's checkpoint callbacks: Lightning runs
    checkpoint callbacks last in this order, so the resume checkpoint holds what the stage's saw.
    A partial of ``ModelCheckpoint`` (the ``model_checkpoint``) is completed with the stage's
    ``checkpoint`` arguments (its folder and save schedule), or left out without them; any other
    entry that is no Callback is a one-line error. A progress bar is left out when
    ``trainer.enable_progress_bar`` is false, the learning-rate monitor when no logger is
    configured."""
    progress = bool(cfg.trainer.get("enable_progress_bar", True))
    configured = []
    for name, spec in (cfg.get("callbacks") or {}).items():
        if spec is None:
            continue
        made = hydra.utils.instantiate(spec, _convert_="all")
        saver = made.func if isinstance(made, partial) else None
        if isinstance(saver, type) and issubclass(saver, ModelCheckpoint):
            if checkpoint is None:
                continue
            made = made(**checkpoint)
        elif not isinstance(made, pl.Callback):
            raise FustalError(f"callbacks.{name}: neither a Callback nor a ModelCheckpoint partial")
        if isinstance(made, ProgressBar) and not progress:
            continue
        if isinstance(made, LearningRateMonitor) and not has_logger:
            continue
        configured.append(made)
    saving = [c for c in configured if isinstance(c, ModelCheckpoint)]
    others = [c for c in configured if not isinstance(c, ModelCheckpoint)]
    return [*others, *stage_callbacks, *saving]


def make_trainer(
    cfg: DictConfig,
    stage: str,
    checkpoint: Mapping[str, Any] | None = None,
    stage_callbacks: Sequence[pl.Callback] = (),
    **stage_arguments: Any,
) -> pl.Trainer:
    """The Trainer of ``stage`` (``generator``, ``student``, ``evaluate``, ``predict``): the
    ``trainer`` group with ``stage_arguments`` (budget, evaluation cadence, gradient clipping),
    the stage's loggers, its ``stage_callbacks`` and the ``callbacks`` group (``checkpoint``: the
    model checkpoint's folder and schedule; ``None`` leaves it out, e.g. for inference)."""
    check_trainer_config(cfg.trainer)
    loggers = make_loggers(cfg, stage)
    callbacks = make_callbacks(cfg, checkpoint, bool(loggers), stage_callbacks)
    return hydra.utils.instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        use_distributed_sampler=False,
        **stage_arguments,
        _convert_="all",
    )
