"""The shape every pipeline stage has, and the one runner that runs them.

A :class:`Stage` names the upstream stages it reads (:meth:`Stage.inputs`) and the config it
reads (:meth:`Stage.key_parts`; with its derived code and the upstream keys: its cache key),
computes its outputs on every rank (:meth:`Stage.compute`), writes them on rank 0
(:meth:`Stage.save`) and reads them back (:meth:`Stage.load`). :func:`run_stage` reuses a
finished entry or computes one (resuming an interrupted run), commits the manifest of what the
stage wrote, exports its products and records its metrics.
"""

from __future__ import annotations

import logging
import shutil
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from omegaconf import DictConfig
from rich.console import Console

from fustal.config import config_hash, to_plain
from fustal.data.views import PipelineData
from fustal.io import write_json
from fustal.metrics.shape import nest
from fustal.pipeline.cache import (
    LOCK,
    MANIFEST,
    StageDir,
    code_fingerprint,
    stage_lock,
    target_modules,
    user_target_files,
)
from fustal.training.distributed import is_global_zero
from fustal.viz.pictures import RunPictures

log = logging.getLogger(__name__)
# the folder of a stage's resume checkpoint inside its entry
CHECKPOINTS = "checkpoints"


class HasMetrics(Protocol):
    """A stage's outputs carry its contribution to the run's metrics (flat:
    :mod:`fustal.metrics.shape`)."""

    metrics: dict[str, Any]


Outputs = TypeVar("Outputs", bound=HasMetrics)
T = TypeVar("T")


@dataclass
class RunContext:
    """What every stage of one run shares: the config, the run dir, the console, the data, and
    the run's metrics (flat; nested into ``metrics.json`` by rank 0 when a stage finishes)."""

    cfg: DictConfig
    output_dir: Path
    console: Console
    data: PipelineData
    metrics: dict[str, Any] = field(default_factory=dict)
    # the stages this run computed (not reused from the cache)
    trained: list[str] = field(default_factory=list)
    # what the run's pictures show, added by each stage (Stage.show)
    shown: RunPictures = field(default_factory=RunPictures)

    def say(self, message: str) -> None:
        """A stage message on the console (rank 0) and in the run's log."""
        if is_global_zero():
            self.console.print(message, highlight=False)
        log.info(message)


@dataclass(frozen=True)
class StageResult(Generic[Outputs]):
    """A finished stage: its outputs in memory and its key (part of its dependants' keys)."""

    outputs: Outputs
    key: str


class Stage(ABC, Generic[Outputs]):
    """One pipeline stage. Subclasses set ``name`` and ``exported`` (the files of a finished
    entry that are copied into the run dir); ``cached = False`` computes the stage in every run,
    saving straight into the run dir (cheap stages, inputs read from files). The code the cache
    key covers is derived (:meth:`code_roots`), the artifacts are what :meth:`save` wrote."""

    name: ClassVar[str]
    exported: ClassVar[tuple[str, ...]] = ()
    cached: ClassVar[bool] = True

    def __init__(self, ctx: RunContext, upstream: Mapping[str, StageResult[Any]]) -> None:
        self.ctx = ctx
        self.cfg = ctx.cfg
        self.upstream = dict(upstream)

    @classmethod
    def inputs(cls, cfg: DictConfig) -> tuple[str, ...]:
        """The upstream stages (by name) whose results this stage reads under ``cfg``."""
        return ()

    def input(self, name: str, kind: type[T]) -> T:
        """The outputs of the upstream stage ``name``, of type (or protocol) ``kind``."""
        outputs = self.upstream[name].outputs
        if not isinstance(outputs, kind):
            raise TypeError(f"{self.name}: {name}'s outputs are no {kind.__name__}")
        return outputs

    @abstractmethod
    def key_parts(self) -> dict[str, Any]:
        """Everything besides code and upstream keys that determines the outputs: the config
        fields read, the dataset identity, the seed."""

    @abstractmethod
    def compute(self, folder: Path) -> Outputs:
        """The outputs, on every rank (``folder``: the entry, for checkpoints)."""

    @abstractmethod
    def save(self, outputs: Outputs, folder: Path) -> None:
        """Write ``outputs`` into ``folder`` (rank 0 only)."""

    def load(self, folder: Path) -> Outputs:
        """The outputs, read back from what :meth:`save` wrote (cached stages)."""
        raise NotImplementedError(f"{self.name}: not a cached stage")

    def show(self, outputs: Outputs, shown: RunPictures) -> None:
        """Add what the run's pictures show of ``outputs`` to ``shown`` (nothing by default)."""

    def code_roots(self) -> list[str]:
        """The modules whose import closure is the stage's code: its own, and those its key
        parts and the callbacks name by ``_target_``."""
        named = target_modules([to_plain(self.key_parts()), to_plain(self.cfg.get("callbacks"))])
        return [type(self).__module__, *named]

    def key(self) -> str:
        config = to_plain(self.key_parts())
        upstream = {name: result.key for name, result in sorted(self.upstream.items())}
        # of the user's files, those the key parts name (fustal.pipeline.keys states the rule)
        code = code_fingerprint(self.code_roots(), user_files=user_target_files(config))
        return config_hash(self.name, {"config": config, "upstream": upstream}, code)


def written_files(folder: Path) -> list[str]:
    """The artifacts of an entry: every file a stage wrote into ``folder`` (not its lock, its
    manifest or its resume checkpoints), as relative paths."""
    skipped = {LOCK, MANIFEST}
    return sorted(
        str(path.relative_to(folder))
        for path in folder.rglob("*")
        if path.is_file()
        and path.name not in skipped
        and path.relative_to(folder).parts[0] != CHECKPOINTS
    )


def run_stage(stage: Stage[Outputs]) -> StageResult[Outputs]:
    """Run or reuse ``stage``, record its metrics (and write ``metrics.json``); returns its
    outputs and key. ``cache: refresh`` recomputes an entry even when it is finished."""
    ctx, cfg = stage.ctx, stage.cfg
    key = stage.key()
    if not stage.cached:
        outputs = stage.compute(ctx.output_dir)
        if is_global_zero():
            stage.save(outputs, ctx.output_dir)
        return recorded(stage, StageResult(outputs, key))
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
            outputs = stage.compute(sdir.path)
            ctx.trained.append(stage.name)
            if is_global_zero():
                stage.save(outputs, sdir.path)
                record = {"key_parts": to_plain(stage.key_parts())}
                sdir.commit(written_files(sdir.path), record)
                # the resume checkpoint is of no use once the stage is finished
                shutil.rmtree(sdir.path / CHECKPOINTS, ignore_errors=True)
    if is_global_zero():
        sdir.export(list(stage.exported), ctx.output_dir)
    return recorded(stage, StageResult(outputs, key))


def recorded(stage: Stage[Outputs], result: StageResult[Outputs]) -> StageResult[Outputs]:
    """``result`` after its metrics (if any) went into the run's metrics and ``metrics.json``
    and what the pictures show of it into ``ctx.shown``."""
    stage.show(result.outputs, stage.ctx.shown)
    if result.outputs.metrics:
        stage.ctx.metrics.update(result.outputs.metrics)
        if is_global_zero():
            write_json(stage.ctx.output_dir / "metrics.json", nest(stage.ctx.metrics))
    return result


def run_plan(ctx: RunContext, plan: list[type[Stage[Any]]]) -> dict[str, StageResult[Any]]:
    """Run the stages of ``plan`` in order, each handed the results of the stages it reads
    (:meth:`Stage.inputs`); returns every result by stage name."""
    results: dict[str, StageResult[Any]] = {}
    for cls in plan:
        upstream = {name: results[name] for name in cls.inputs(ctx.cfg)}
        stage = cls(ctx, upstream)
        results[stage.name] = run_stage(stage)
    return results
