"""A probe added to an in-process run from the command line as a Lightning callback
(``+callbacks.seen._target_=tests.probes.TrainingVideos``): production code has no hook for
it."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

from fustal.generator.module import GeneratorModule

# stage -> the ids of every video a training batch of that stage held (this process's runs)
SEEN: dict[str, set[str]] = {"generator": set(), "student": set()}


class TrainingVideos(pl.Callback):
    """Record the video of every training batch item in :data:`SEEN`, by stage."""

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, *args: Any
    ) -> None:
        stage = "generator" if isinstance(pl_module, GeneratorModule) else "student"
        SEEN[stage].update(batch["video_id"])
