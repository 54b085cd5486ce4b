"""Shared pieces of the stage runners: run context, trainer construction, DDP gathering,
periodic evaluation, per-epoch reseeding, stage-dir lookup."""

from __future__ import annotations

import logging
import netrc
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Any, TypeVar

import hydra
import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from omegaconf import DictConfig
from rich.console import Console

from fustal.config import config_hash, to_plain
from fustal.data.sampling import world
from fustal.io import write_json
from fustal.pipeline.cache import StageDir

log = logging.getLogger(__name__)
T = TypeVar("T")

# Seconds between rank 0's attempts at a stage lock another run holds (DDP).
LOCK_POLL_S = 1.0
# Trainer options that change nothing a stage computes (kept out of cache keys).
COSMETIC_TRAINER_KEYS = ("enable_progress_bar", "log_every_n_steps")
# Fault injection for the resume tests: ``FUSTAL_FAULT_AT=<stage>:<point>`` SIGKILLs the run there.
FAULT_ENV = "FUSTAL_FAULT_AT"


def fault_point(stage: str, point: str) -> None:
    """Fault-injection hook for testing: kill this process with SIGKILL (no cleanup, no
    ``finally``) when ``$FUSTAL_FAULT_AT`` is ``<stage>:<point>``. Points: ``step<N>`` after
    optimizer step N of a training, ``fitted`` after training, ``written`` after a stage's
    artifacts are written (before its manifest)."""
    if os.environ.get(FAULT_ENV) == f"{stage}:{point}":
        os.kill(os.getpid(), signal.SIGKILL)


def is_global_zero() -> bool:
    """Rank 0 of the (possibly not yet initialized) process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0))) == 0


@dataclass
class RunContext:
    """The run dir, the console and the run's metrics (``metrics.json``, rank 0 writes)."""

    cfg: DictConfig
    output_dir: Path
    console: Console
    metrics: dict[str, Any] = field(default_factory=dict)

    def record(self, key: str, value: Any) -> None:
        """Set ``metrics[key]`` (dotted keys nest) and rewrite ``metrics.json`` atomically."""
        node = self.metrics
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
        if is_global_zero():
            write_json(self.output_dir / "metrics.json", self.metrics)

    def write_json(self, name: str, data: Any) -> None:
        if is_global_zero():
            write_json(self.output_dir / name, data)


def dataset_identity(cfg: DictConfig) -> dict:
    """What identifies the data of a run: the dataset config (synthetic parameters included)."""
    return to_plain(cfg.dataset)


def trainer_identity(cfg: DictConfig) -> dict:
    plain = to_plain(cfg.trainer)
    return {k: v for k, v in plain.items() if k not in COSMETIC_TRAINER_KEYS}


def stage_dir(ctx: RunContext, stage: str, *parts: Any) -> StageDir:
    """The artifact folder of a stage: a shared cache entry keyed by ``parts`` when
    ``cache=true``, else a folder of the run dir."""
    key = config_hash(stage, *parts)
    if ctx.cfg.cache:
        return StageDir(Path(ctx.cfg.paths.cache_dir) / stage / key, stage, key)
    return StageDir(ctx.output_dir / stage, stage, key, reusable=False)


def is_distributed() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def broadcast_from_zero(value: T) -> T:
    """Rank 0's ``value``, on every rank (identity without a process group)."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait until every rank gets here (no-op without a process group)."""
    if is_distributed():
        dist.barrier()


@contextmanager
def stage_lock(sdir: StageDir) -> Iterator[bool]:
    """Hold a stage dir for this run; yields whether its artifacts can be reused.

    Rank 0 takes the file lock (serializing runs that share the dir) and checks the entry (a
    corrupt one is discarded there); every rank gets that verdict. While another run holds the
    lock, rank 0 tells the other ranks so every ``LOCK_POLL_S`` seconds: one collective waiting
    for the whole of another run's training would time out. Leaving the block waits for every
    rank, so what rank 0 wrote inside it is there for all of them afterwards."""
    rank_zero = is_global_zero()

    def waiting() -> None:
        broadcast_from_zero(False)
        time.sleep(LOCK_POLL_S)

    with sdir.lock(waiting if is_distributed() else None) if rank_zero else nullcontext():
        while not broadcast_from_zero(rank_zero):  # rank 0 holds the lock here: True ends it
            pass
        yield broadcast_from_zero(sdir.complete() if rank_zero else False)
        barrier()


class BatchReseed(pl.Callback):
    """Seed the global RNGs (torch, numpy, random) from ``(seed, epoch, batch, rank)`` before
    every training batch. Dropout and snippet mining are then a function of the position in
    training, whatever else drew random numbers in between (a DataLoader draws its base seed
    when its iterator is created, which Lightning does at a different point of a resumed epoch
    than of an uninterrupted one), so a resumed run replays exactly what an uninterrupted one
    does."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        rank, _ = world()
        entropy = [self.seed % 2**32, trainer.current_epoch, batch_idx, rank]
        seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
        pl.seed_everything(seed, verbose=False)


class FaultInjection(pl.Callback):
    """Calls :func:`fault_point` with ``step<global step>`` after every training batch."""

    def __init__(self, stage: str) -> None:
        self.stage = stage

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        fault_point(self.stage, f"step{trainer.global_step}")


def seed_stage(seed: int) -> None:
    """Seed the global RNGs before a stage builds its model, so that its initialization does not
    depend on what ran earlier in the process (a stage trained, resumed or reused)."""
    pl.seed_everything(seed, workers=True, verbose=False)


class LastCheckpoint(pl.Callback):
    """Save the whole training state (weights, EMA, buffers, optimizer, schedulers, loop
    progress) to ``path`` at the end of every ``every_n_epochs``-th epoch and when training
    ends. Written to a temp file and renamed, so a kill leaves the previous checkpoint or the new
    one, never a partial file. (Lightning's ``ModelCheckpoint`` with ``save_top_k=0`` saves
    ``last.ckpt`` only when training ends.)

    Lightning's loops resume step-limited training (``max_steps``) exactly from a checkpoint
    taken after an epoch's last batch, and epoch-limited training from one taken at epoch end
    (the other combinations replay a batch too many), hence the two hooks."""

    def __init__(self, path: Path, every_n_epochs: int = 1) -> None:
        self.path = Path(path)
        self.every_n_epochs = every_n_epochs
        self.saved_step = -1

    def save(self, trainer: pl.Trainer) -> None:
        if trainer.global_step == self.saved_step:
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
        self.saved_step = trainer.global_step

    def epoch_done(self, trainer: pl.Trainer) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.save(trainer)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if trainer.max_steps != -1 and batch_idx + 1 == trainer.num_training_batches:
            self.epoch_done(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.max_steps == -1:
            self.epoch_done(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.save(trainer)


class PeriodicEvaluation(pl.Callback):
    """Run ``evaluate(module) -> {name: value}`` every ``every_n_steps`` optimizer steps and at
    the end of training, and log the results under ``prefix``."""

    def __init__(
        self,
        evaluate: Callable[[pl.LightningModule], dict[str, float]],
        every_n_steps: int,
        prefix: str,
    ) -> None:
        self.evaluate = evaluate
        self.every_n_steps = every_n_steps
        self.prefix = prefix
        self.history: list[tuple[int, dict[str, float]]] = []

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            metrics = self.evaluate(pl_module)
        pl_module.train(was_training)
        self.history.append((trainer.global_step, metrics))
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(
                    {f"{self.prefix}/{k}": v for k, v in metrics.items()}, step=trainer.global_step
                )

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step % self.every_n_steps == 0 and step < trainer.max_steps:
            self._run(trainer, pl_module)


def gather_dict(local: dict) -> dict:
    """Every rank's per-item dict merged, on every rank, in a single process's order: evaluation
    shards are rank-strided (:class:`~fustal.data.sampling.EpochSampler`), so the ranks' items
    interleave (identity without a process group)."""
    if not is_distributed():
        return local
    parts: list[list] = [[] for _ in range(dist.get_world_size())]
    dist.all_gather_object(parts, list(local.items()))
    return dict(item for row in zip_longest(*parts) for item in row if item is not None)


def make_loggers(cfg: DictConfig, stage: str) -> list:
    """Instantiate the ``logger`` group (csv / tensorboard / wandb) for one stage: csv and
    tensorboard write one version folder per stage, W&B logs every stage of a run into one W&B
    run (metric names carry the stage prefix, the x-axis is ``trainer/global_step``)."""
    loggers = []
    for name, spec in (cfg.get("logger") or {}).items():
        if name == "wandb":
            loggers.append(make_wandb_logger(cfg, spec))
        else:
            loggers.append(hydra.utils.instantiate(spec, version=stage))
    return loggers


def wandb_offline(spec: DictConfig) -> bool:
    """``logger.wandb.offline`` if set, else offline unless the user has W&B credentials
    (``WANDB_API_KEY`` or a ``wandb login`` entry in ~/.netrc); ``WANDB_MODE=offline`` wins."""
    if spec.get("offline") is not None:
        return bool(spec.offline)
    if os.environ.get("WANDB_MODE") == "offline":
        return True
    if os.environ.get("WANDB_API_KEY"):
        return False
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is None
    except (OSError, netrc.NetrcParseError):
        return True


def make_wandb_logger(cfg: DictConfig, spec: DictConfig) -> Any:
    """A WandbLogger on the run's W&B run, started by the first stage and reused by the later
    ones; a run left open by an earlier job of the same process (multirun) is finished first."""
    import wandb

    config = to_plain(cfg)
    run = wandb.run
    if run is not None:
        if run.config.get("paths", {}).get("output_dir") == config["paths"]["output_dir"]:
            return hydra.utils.instantiate(spec, _partial_=True)(experiment=run)
        wandb.finish()
    make = hydra.utils.instantiate(
        spec,
        _partial_=True,
        offline=wandb_offline(spec),
        name=spec.get("name") or wandb_run_name(cfg),
    )
    # ``config`` is also the name of instantiate's first parameter: pass it afterwards
    return make(config=config)


def wandb_run_name(cfg: DictConfig) -> str | None:
    """The sweep job's overrides as the run name (None outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    overrides = HydraConfig.get().overrides.task
    return ",".join(overrides) if overrides else None


def make_trainer(cfg: DictConfig, stage: str, callbacks: list, **kwargs: Any) -> pl.Trainer:
    """A Trainer from the ``trainer`` group plus stage-specific arguments."""
    from pytorch_lightning.callbacks import LearningRateMonitor, RichProgressBar

    options = to_plain(cfg.trainer)
    callbacks = [*callbacks, FaultInjection(stage)]
    if options.get("enable_progress_bar", True):
        callbacks = [*callbacks, RichProgressBar(leave=True)]
    loggers = make_loggers(cfg, stage)
    if loggers:
        callbacks = [*callbacks, LearningRateMonitor(logging_interval="step")]
    return pl.Trainer(
        **options,
        callbacks=callbacks,
        logger=loggers or False,
        # the stages save their own checkpoints (LastCheckpoint) into their stage dirs
        enable_checkpointing=False,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        **kwargs,
    )
