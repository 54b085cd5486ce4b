"""Probes added to an in-process run from the command line as Lightning callbacks
(``+callbacks.seen._target_=tests.probes.TrainingVideos``): production code has no hook for
them."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from fustal.generator.module import GeneratorModule
from fustal.training.evaluated_module import EvaluatedModule

# stage -> the ids of every video a training batch of that stage held (this process's runs)
SEEN: dict[str, set[str]] = {"generator": set(), "student": set()}


class TrainingVideos(pl.Callback):
    """Record the video of every training batch item in :data:`SEEN`, by stage."""

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, *args: Any
    ) -> None:
        stage = "generator" if isinstance(pl_module, GeneratorModule) else "student"
        SEEN[stage].update(batch["video_id"])


class ScriptedCurve(pl.Callback):
    """Replace the held-out metric each variant's evaluation reports by a scripted value (what
    the stage's choice then sees): ``curves`` maps a variant to its values, the generator's
    indexed by evaluation (every ``every`` steps), the student's by epoch (one evaluation per
    epoch). ``metric``: the logged name's last part (``avg``, ``video_map``)."""

    def __init__(self, curves: dict[str, list[float]], every: int, metric: str = "avg") -> None:
        self.curves = curves
        self.every = every
        self.metric = metric

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        assert isinstance(pl_module, EvaluatedModule)
        measured = pl_module.evaluation_results

        def scripted(evaluated: str) -> dict[str, torch.Tensor]:
            results = measured(evaluated)
            if evaluated != "val":
                return results
            if isinstance(pl_module, GeneratorModule):
                index = trainer.global_step // self.every - 1
            else:
                index = trainer.current_epoch
            for variant, values in self.curves.items():
                key = f"{variant}/val/{self.metric}"
                if key in results:
                    results[key] = torch.tensor(values[index], dtype=torch.float64)
            return results

        pl_module.evaluation_results = scripted  # type: ignore[method-assign]


# the student's weights (``model.`` and ``ema.module.`` tensors) recorded by
# :class:`StudentWeights`: ``"end <e>"`` after training epoch ``e`` (0-based, what the held-out
# evaluation of epoch ``e + 1`` scores), ``"start <e>"`` at the first batch of epoch ``e``
WEIGHTS: dict[str, dict[str, torch.Tensor]] = {}


class StudentWeights(pl.Callback):
    """Record a student's weights in :data:`WEIGHTS` at the end of every training epoch and at
    the first batch of every epoch (after every epoch-start hook has run)."""

    @staticmethod
    def snapshot(pl_module: pl.LightningModule) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx == 0 and not isinstance(pl_module, GeneratorModule):
            WEIGHTS[f"start {trainer.current_epoch}"] = self.snapshot(pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not isinstance(pl_module, GeneratorModule):
            WEIGHTS[f"end {trainer.current_epoch}"] = self.snapshot(pl_module)


# what :class:`IgnoredRegions` saw of the student's training: ``"rows"``, the DataModule's ignored
# rows per video; ``"batches"``, whether each training batch carried ``ignore_segments``
IGNORED: dict[str, Any] = {}


class IgnoredRegions(pl.Callback):
    """Record in :data:`IGNORED` the student DataModule's ignored rows (``student.data
    .ignore_score``) and whether its training batches carry them."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not isinstance(pl_module, GeneratorModule):
            IGNORED["rows"] = trainer.datamodule.ignore  # type: ignore[attr-defined]

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, *args: Any
    ) -> None:
        if not isinstance(pl_module, GeneratorModule):
            IGNORED.setdefault("batches", set()).add("ignore_segments" in batch)
