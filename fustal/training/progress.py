"""Progress of a stage's Trainer: a live bar on a terminal, plain lines in logs (SLURM, CI).

Lightning's own bars count epochs (``Epoch 0/-2`` for step-limited training), repeat the logger
version (``v_num``) and cut metric names; in a log file they redraw into long runs of lines.
:class:`StageProgress` shows what a stage does in its own terms: ``generator: step 120/300``,
``student: epoch 3/15``, the training loss, the last test mAP, the videos predicted; on a
terminal as one rich bar per phase, elsewhere as a line every ``interval_s`` seconds and one at
the end of each phase.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBar
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn


def stage_name(pl_module: pl.LightningModule) -> str:
    """``generator`` or ``student`` (the module's class name otherwise)."""
    name = type(pl_module).__name__.lower()
    return name.removesuffix("module") or name


# the evaluation metrics a progress line shows (in %): the test or held-out average mAP, and the
# held-out video-level mAP where no detection mAP is scored (validation=video_labels)
SHOWN = ("/test/avg", "/val/avg", "/val/video_map")


def short_metrics(metrics: dict[str, Any], tested_at: int | None = None) -> str:
    """``loss 0.632 · generator test avg 14.3`` from the progress-bar metrics: the training loss
    and the evaluation's average mAP (in %; ``val`` on held-out videos), names without their
    stage prefixes; ``(at step N)`` after the evaluated values when they were measured at an
    earlier step ``tested_at``."""
    parts, tests = [], []
    detection = {key.rsplit("/", 1)[0] for key in metrics if key.endswith("/val/avg")}
    for key, value in metrics.items():
        if key.endswith("/train/loss"):
            parts.append(f"loss {float(value):.3f}")
        elif key.endswith(SHOWN) and not (
            key.endswith("/video_map") and key.rsplit("/", 1)[0] in detection
        ):
            variant, section, name = key.split("/")
            variant = variant.replace("_", " + ").replace("student + ema", "EMA")
            tests.append(f"{variant} {section} {name} {100 * float(value):.1f}")
    if tests and tested_at is not None:
        tests[-1] += f" (at step {tested_at})"
    return " · ".join(parts + tests)


class StageProgress(ProgressBar):
    """Training, evaluation and prediction progress of a stage (see the module docstring).
    ``terminal``: None decides from whether standard output is a terminal."""

    def __init__(self, interval_s: float = 30.0, terminal: bool | None = None) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.terminal = sys.stdout.isatty() if terminal is None else terminal
        self._enabled = True
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self.total = 0
        self.done = 0
        self.label = ""
        self.last_print = 0.0
        self.printed = ""
        # the training step of the last test evaluation during fit (None: none yet)
        self.tested_at: int | None = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    # ---------------------------------------------------------------- display
    def _start(self, label: str, total: int) -> None:
        self._stop()
        self.label, self.total, self.done, self.last_print = label, max(total, 0), 0, 0.0
        if self.terminal:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[metrics]}"),
                console=Console(),
                transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task(label, total=self.total or None, metrics="")

    def _advance(self, done: int, metrics: str = "", force: bool = False) -> None:
        self.done = done
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=done, metrics=metrics)
            return
        now = time.monotonic()
        of = f"/{self.total}" if self.total else ""
        line = " · ".join(part for part in (f"{self.label} {done}{of}", metrics) if part)
        if line != self.printed and (force or now - self.last_print >= self.interval_s):
            self.last_print, self.printed = now, line
            print(line, flush=True)

    def _stop(self, metrics: str = "") -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress, self.task = None, None
        elif self.label and self.done:
            self._advance(self.done, metrics, force=True)
        self.label = ""

    def _metrics(self, trainer: pl.Trainer) -> str:
        stale = self.tested_at is not None and self.tested_at != trainer.global_step
        return short_metrics(dict(trainer.callback_metrics), self.tested_at if stale else None)

    # ---------------------------------------------------------------- training
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.is_enabled:
            return
        steps = trainer.max_steps
        total = steps if steps > 0 else int(trainer.estimated_stepping_batches)
        self._start(f"{stage_name(pl_module)}: step", total)
        self.tested_at = None
        self._advance(trainer.global_step, force=True)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        if self.is_enabled and self.label:
            metrics = self._metrics(trainer)
            if trainer.max_steps <= 0:
                epoch = f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"
                metrics = " · ".join(part for part in (epoch, metrics) if part)
            self._advance(trainer.global_step, metrics)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.is_enabled:
            self._stop(self._metrics(trainer))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.is_enabled and self.label and trainer.state.fn == "fit":
            self.tested_at = trainer.global_step
            self._advance(trainer.global_step, self._metrics(trainer), force=True)

    # ---------------------------------------------------------------- prediction
    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.is_enabled:
            videos = sum(len(getattr(loader, "dataset", ())) for loader in _loaders(trainer))
            self._start(f"{stage_name(pl_module)}: predicting videos", videos)

    def on_predict_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.is_enabled and self.label:
            self._advance(self.done + len(batch["video_id"]))

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.is_enabled:
            self._stop()


def _loaders(trainer: pl.Trainer) -> list[Any]:
    loaders = trainer.predict_dataloaders
    if loaders is None:
        return []
    return list(loaders) if isinstance(loaders, list | tuple) else [loaders]
