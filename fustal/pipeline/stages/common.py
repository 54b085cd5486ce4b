"""Pieces the training stages share: seeding, the videos the pictures show, the held-out
metrics, and training with resume (their cache keys: :mod:`fustal.pipeline.keys`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from fustal.config.checks import MAX_PLOT_VIDEOS
from fustal.data.annotations import Video
from fustal.data.dataset import StageData
from fustal.errors import FustalError, Interrupted
from fustal.metrics.results import VideoDetections
from fustal.metrics.shape import flatten
from fustal.metrics.validation import val_metrics
from fustal.pipeline.stage import CHECKPOINTS, RunContext
from fustal.training.selection import BestCheckpoint


def seed_stage(seed: int) -> None:
    """Seed the global RNGs before a stage builds its model, so that its initialization does not
    depend on what ran earlier in the process (a stage trained, resumed or reused)."""
    pl.seed_everything(seed, workers=True, verbose=False)


def held_out_metrics(
    ctx: RunContext,
    data: StageData,
    detections: dict[str, VideoDetections],
    video_scores: dict[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """The ``<model>.val`` metrics of each model's detections on the held-out videos, scored as
    the run's ``validation.mode`` asks (empty without held-out videos). Stages call it after
    computing and after loading: their entries keep the detections, not these metrics, so that
    ``heldout`` and ``video_labels`` share them."""
    videos = data.val_videos()
    if not videos:
        return {}
    mode, tiou = ctx.cfg.validation.mode, list(ctx.cfg.dataset.tiou_thresholds)
    return flatten(
        {
            f"{model}.val": val_metrics(mode, rows, videos, data.num_classes, tiou, video_scores)
            for model, rows in detections.items()
        }
    )


def picture_videos(videos: list[Video]) -> list[Video]:
    """The videos the pictures may show: the first :data:`MAX_PLOT_VIDEOS` by id (their CAS and
    detections are stored with the stages whatever ``plot_videos`` is, so that it is not part
    of the cache keys)."""
    return sorted(videos, key=lambda v: v.id)[:MAX_PLOT_VIDEOS]


def fit(
    ctx: RunContext,
    stage: str,
    trainer: pl.Trainer,
    module: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    folder: Path,
) -> None:
    """``trainer.fit``, resumed from the stage's last checkpoint when an interrupted run left
    one (weights, EMA, optimizer, scheduler, loop and data position)."""
    last = folder / CHECKPOINTS / "last.ckpt"
    if last.is_file():
        ctx.say(f"{stage}: resuming from {last}")
    message = (
        f"{stage} training stopped; the same command resumes from its last checkpoint ({last})"
    )
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if last.is_file() else None)
    except SystemExit:  # Lightning's answer to Ctrl-C (exit 1) and SIGTERM (exit 0)
        raise Interrupted(message) from None
    except MisconfigurationException as err:  # a module that does not log what is chosen on
        chooser = [c for c in trainer.checkpoint_callbacks if isinstance(c, BestCheckpoint)]
        monitored = next((c.monitor for c in chooser if f"{c.monitor!r}" in str(err)), None)
        if monitored is None:
            raise
        raise FustalError(
            f"{stage}.select: the module logs no {monitored!r} in its validation loop to choose"
            f" its weights on; log it, or keep the last weights with {stage}.select=last"
        ) from None
    if trainer.interrupted:
        raise Interrupted(message)
