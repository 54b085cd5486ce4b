"""The shape every pipeline stage has, and the one runner that runs them.

A :class:`Stage` says what it reads (:meth:`Stage.key_parts`, hashed with the code it runs into
its cache key), how it runs (:meth:`Stage.run`, which writes its artifacts and returns its
outputs in memory) and how its outputs are read back from a finished cache entry
(:meth:`Stage.load`). :func:`run_stage` finds the entry, reuses it or runs the stage (resuming
from the checkpoint an interrupted run left in it), commits its manifest and copies the files
that are products into the run dir.
"""

from __future__ import annotations

import logging
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from omegaconf import DictConfig
from rich.console import Console

from fustal.config import config_hash, to_plain
from fustal.data.views import PipelineData
from fustal.io import write_json
from fustal.pipeline.cache import StageDir, code_fingerprint, stage_lock, target_modules
from fustal.training.distributed import is_global_zero

log = logging.getLogger(__name__)
# the folder of a stage's resume checkpoint inside its entry
CHECKPOINTS = "checkpoints"
Outputs = TypeVar("Outputs")


@dataclass
class RunContext:
    """What every stage of one run shares: the config, the run dir, the console, the data, and
    the run's metrics (``metrics.json``, written by rank 0 when a stage finishes)."""

    cfg: DictConfig
    output_dir: Path
    console: Console
    data: PipelineData
    metrics: dict[str, Any] = field(default_factory=dict)
    # the stages this run computed (not reused from the cache)
    trained: list[str] = field(default_factory=list)

    def record(self, metrics: dict[str, Any]) -> None:
        """Merge ``{"section.sub": values}`` entries into the run's metrics (dotted keys nest)."""
        for key, value in metrics.items():
            node = self.metrics
            *parents, last = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = value

    def write_metrics(self) -> None:
        if is_global_zero():
            write_json(self.output_dir / "metrics.json", self.metrics)

    def say(self, message: str) -> None:
        """A stage message on the console (rank 0) and in the run's log."""
        if is_global_zero():
            self.console.print(message, highlight=False)
        log.info(message)


class Stage(ABC, Generic[Outputs]):
    """One pipeline stage. Subclasses set ``name``, ``artifacts`` (the files that make a
    finished entry; the manifest lists them) and ``exported`` (those copied into the run dir);
    ``cached = False`` runs the stage in every run, writing straight into the run dir (for cheap
    stages). The code the cache key covers is derived (:meth:`code_roots`)."""

    name: ClassVar[str]
    artifacts: ClassVar[tuple[str, ...]]
    exported: ClassVar[tuple[str, ...]]
    cached: ClassVar[bool] = True

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.cfg = ctx.cfg

    @abstractmethod
    def key_parts(self) -> dict[str, Any]:
        """Everything besides code that determines the outputs: the config fields read, the
        dataset identity, the seed, upstream keys."""

    @abstractmethod
    def run(self, folder: Path) -> Outputs:
        """Compute the outputs, write the artifacts into ``folder`` (rank 0), return them."""

    def load(self, folder: Path) -> Outputs:
        """The outputs, read from the artifacts of a finished entry (cached stages)."""
        raise NotImplementedError(f"{self.name}: not a cached stage")

    def code_roots(self) -> list[str]:
        """The modules whose import closure is the stage's code: the stage's own module and the
        fustal modules that its key parts and the callbacks name by ``_target_`` (reached only
        through ``hydra.utils.instantiate``)."""
        named = target_modules([to_plain(self.key_parts()), to_plain(self.cfg.get("callbacks"))])
        return [type(self).__module__, *named]

    def key(self) -> str:
        parts = to_plain(self.key_parts())
        return config_hash(self.name, parts, code_fingerprint(self.code_roots()))


def run_stage(stage: Stage[Outputs]) -> tuple[Outputs, str]:
    """Run or reuse ``stage``; returns its outputs and its key (the upstream key of the next
    stage). ``cache: refresh`` recomputes an entry even when it is finished."""
    ctx, cfg = stage.ctx, stage.cfg
    key = stage.key()
    if not stage.cached:
        return stage.run(ctx.output_dir), key
    if cfg.cache:
        sdir = StageDir(Path(cfg.paths.cache_dir) / stage.name / key, stage.name, key)
    else:
        sdir = StageDir(ctx.output_dir / stage.name, stage.name, key, reusable=False)
    with stage_lock(sdir) as finished:
        if finished and cfg.cache == "refresh":
            ctx.say(f"{stage.name}: cache=refresh: recomputing {sdir.path}")
            if is_global_zero():
                sdir.discard()
            finished = False
        if finished:
            ctx.say(f"{stage.name}: reusing {sdir.path}")
            outputs = stage.load(sdir.path)
        else:
            outputs = stage.run(sdir.path)
            ctx.trained.append(stage.name)
            if is_global_zero():
                sdir.commit(list(stage.artifacts), {"key_parts": to_plain(stage.key_parts())})
                # the resume checkpoint is of no use once the stage is finished
                shutil.rmtree(sdir.path / CHECKPOINTS, ignore_errors=True)
    if is_global_zero():
        sdir.export(list(stage.exported), ctx.output_dir)
    return outputs, key
