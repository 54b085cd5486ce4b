"""``run_pipeline``: the stages of ``python -m fustal.train`` in order, the run's pictures and the
end-of-run summary. Callable in process with a composed config (``paths.output_dir`` set)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from fustal.config import CONFIG_DIR, make_console, render_text, run_dir
from fustal.config.checks import check_config
from fustal.data.views import load_pipeline_data
from fustal.errors import FustalError
from fustal.io import ensure_writable_dir, write_with
from fustal.metrics.results import VideoDetections
from fustal.metrics.table import results_table
from fustal.pipeline.data import run_data_stage
from fustal.pipeline.launch import distributed_run
from fustal.pipeline.pictures import make_pictures
from fustal.pipeline.stage import RunContext, Stage, run_plan
from fustal.pipeline.stages.filter import FilterStage
from fustal.pipeline.stages.generator import GeneratorStage
from fustal.pipeline.stages.sources import PseudoLabelFile, ScoreFile
from fustal.pipeline.stages.student import StudentStage
from fustal.pipeline.summary import log_run_summary
from fustal.training.distributed import is_global_zero, separate_rank_log
from fustal.training.quiet import quiet_libraries

log = logging.getLogger(__name__)


@dataclass
class RunOutputs:
    """What the stages of one run produced, for the pictures (empty: that stage did not run)."""

    pseudo: dict[str, VideoDetections] = field(default_factory=dict)
    train_tracks: dict[str, VideoDetections] = field(default_factory=dict)
    test_tracks: dict[str, VideoDetections] = field(default_factory=dict)
    cas: dict[str, dict[str, Any]] = field(default_factory=dict)


def run_pipeline(cfg: DictConfig) -> dict:
    """Run the stage(s) selected by ``cfg.stage``; draw the pictures; return the run's metrics."""
    check_config(cfg)
    quiet_libraries()
    separate_rank_log()
    console = make_console()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.stage == "data":
        return run_data_stage(cfg, console)
    ctx = RunContext(cfg, ensure_writable_dir(run_dir(cfg)), console, load_pipeline_data(cfg))
    if is_global_zero():
        write_with(ctx.output_dir / "config.yaml", lambda tmp: OmegaConf.save(cfg, tmp))
    for line in header(cfg, ctx):
        ctx.say(line)
    log_scale(cfg)
    with distributed_run(cfg):
        outputs = run_stages(ctx)
    if is_global_zero():
        pictures = []
        if cfg.plot_videos > 0:
            pictures = make_pictures(
                ctx, outputs.train_tracks, outputs.test_tracks, outputs.pseudo, outputs.cas
            )
        watched = [name for name in cfg.logger or {} if name != "csv"]  # csv: the default
        if watched and not ctx.trained:
            log.warning(
                "logger=%s: every stage of this run was reused from the cache, so it logged no"
                " training curves (only the results); cache=refresh retrains",
                ",".join(watched),
            )
        log_run_summary(cfg, ctx.metrics, pictures)
        table = results_table(ctx.metrics, list(cfg.dataset.tiou_thresholds), cfg.supervision)
        console.print(table)
        log.info("results\n%s", render_text(table))
    return ctx.metrics


def device_summary(trainer: DictConfig) -> str:
    """``cpu``, ``gpu``, ``2 x cpu (ddp)``... from the ``trainer`` settings."""
    accelerator = str(trainer.get("accelerator", "auto"))
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    devices, nodes = trainer.get("devices", 1), int(trainer.get("num_nodes", 1))
    if isinstance(devices, int) and devices * nodes > 1:
        return f"{devices * nodes} x {accelerator} ({trainer.get('strategy')})"
    return accelerator if devices in (1, "1", "auto") else f"{accelerator} {devices}"


def scale_overrides(cfg: DictConfig) -> tuple[str, list[str]]:
    """The selected ``scale`` option and ``key=value`` of every value it sets over the group
    files (``("", [])`` outside a Hydra app)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return "", []
    choice = HydraConfig.get().runtime.choices.get("scale")
    path = CONFIG_DIR / "scale" / f"{choice}.yaml"
    if not choice or not path.is_file():
        return "", []

    def leaves(node: Any, prefix: str) -> list[str]:
        if isinstance(node, dict):
            return [line for k, v in node.items() for line in leaves(v, f"{prefix}{k}.")]
        key = prefix[:-1]
        return [f"{key}={OmegaConf.select(cfg, key)}"]

    return str(choice), leaves(OmegaConf.to_container(OmegaConf.load(path)), "")


def header(cfg: DictConfig, ctx: RunContext) -> list[str]:
    """The run's first lines: what runs, on which data and device, where the outputs go, and
    how many values the ``scale`` option sets (the full config is ``config.yaml`` in the run
    dir; the values the scale sets are listed in the log, :func:`log_scale`)."""
    data = ctx.data.student
    train, test = len(data.train_videos()), len(data.test_videos())
    what = "ground truth (upper bound)" if cfg.supervision == "full" else "video labels"
    cache = f"stage cache {cfg.paths.cache_dir}" if cfg.cache else "no stage cache"
    lines = [
        f"fustal: stage={cfg.stage} on {cfg.dataset.name} ({train} training / {test} test"
        f" videos, {data.num_classes} classes, {data.feature_dim()}-d features) from {what};"
        f" {device_summary(cfg.trainer)}, seed {cfg.seed}",
        f"run dir {ctx.output_dir} (the full config: config.yaml); {cache}",
    ]
    scale, overrides = scale_overrides(cfg)
    if overrides:
        lines.append(
            f"scale={scale} sets {len(overrides)} size values over the group files"
            f" (conf/scale/{scale}.yaml; listed in train.log)"
        )
    return lines


def log_scale(cfg: DictConfig) -> None:
    """Log (to train.log) every value the ``scale`` option sets, as this run uses it."""
    scale, overrides = scale_overrides(cfg)
    if overrides:
        log.info("scale=%s sets: %s", scale, ", ".join(overrides))


def stage_plan(cfg: DictConfig) -> list[type[Stage[Any]]]:
    """The stages ``cfg.stage`` asks for, in order: the pseudo labels (the generator's, or a
    file's with ``pseudo_labels=PATH``), the filter, then the student (weak supervision); with
    ``fusion=generator`` the generator also where nothing else needs it (``supervision=full``,
    ``pseudo_labels=PATH``), with ``fusion=file`` the score file."""
    plan: list[type[Stage[Any]]] = []
    if cfg.supervision == "weak":
        if cfg.pseudo_labels:
            plan.append(PseudoLabelFile)
        elif cfg.stage in ("generator", "filter", "all"):
            plan.append(GeneratorStage)
        else:
            raise FustalError(
                "pseudo_labels: stage=student needs pseudo labels: run stage=all or pass"
                " pseudo_labels=PATH (an ActivityNet results file)"
            )
        if cfg.stage == "generator":
            return plan
        plan.append(FilterStage)
        if cfg.stage == "filter":
            return plan
    if cfg.fusion.source == "generator" and GeneratorStage not in plan:
        plan.append(GeneratorStage)
    if cfg.fusion.source == "file":
        plan.append(ScoreFile)
    return [*plan, StudentStage]


def run_stages(ctx: RunContext) -> RunOutputs:
    """The stages of :func:`stage_plan` (their metrics go to ``ctx`` and ``metrics.json``);
    returns what the pictures show."""
    results = run_plan(ctx, stage_plan(ctx.cfg))
    out = RunOutputs()
    if "generator" in results:
        gen = results["generator"].outputs
        out.cas = gen.cas
        out.test_tracks["generator"] = gen.test
    for name in ("generator", PseudoLabelFile.name):
        if name in results:
            pseudo = results[name].outputs.pseudo_labels
            out.pseudo["raw"] = out.train_tracks["pseudo labels (raw)"] = pseudo
            break
    if "filter" in results:
        filtered = results["filter"].outputs.filtered
        out.pseudo["filtered"] = out.train_tracks["pseudo labels (filtered)"] = filtered
    if "student" in results:
        stu = results["student"].outputs
        name = "student + EMA" if "student_ema" in stu.test else "student"
        out.train_tracks[name] = stu.pictures
        out.test_tracks[name] = stu.test.get("student_ema", stu.test["student"])
    return out
