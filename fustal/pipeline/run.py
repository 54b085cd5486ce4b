"""``run_pipeline``: the stages of ``python -m fustal.train`` in order, the run's pictures and the
end-of-run summary. Callable in process with a composed config (``paths.output_dir`` set)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from fustal.config import make_console, render_text, run_dir
from fustal.config.checks import check_config
from fustal.console import header, log_scale
from fustal.data.overview import run_data_stage
from fustal.data.views import load_pipeline_data
from fustal.errors import FustalError
from fustal.io import ensure_writable_dir, write_with
from fustal.metrics.shape import nest
from fustal.metrics.table import results_table
from fustal.pipeline.launch import distributed_run
from fustal.pipeline.stage import RunContext, Stage, run_plan
from fustal.pipeline.stages.common import picture_videos
from fustal.pipeline.stages.filter import FilterStage
from fustal.pipeline.stages.generator import GeneratorStage
from fustal.pipeline.stages.sources import PseudoLabelFile, ScoreFile
from fustal.pipeline.stages.student import StudentStage
from fustal.pipeline.tracker_summary import log_run_summary
from fustal.training.distributed import is_global_zero, separate_rank_log
from fustal.training.quiet import quiet_libraries
from fustal.viz.pictures import make_pictures
from fustal.viz.rundir import PICTURES

log = logging.getLogger(__name__)


def run_pipeline(cfg: DictConfig) -> dict:
    """:func:`~fustal.config.checks.check_config`, then :func:`run_checked`."""
    check_config(cfg)
    return run_checked(cfg)


def run_checked(cfg: DictConfig) -> dict:
    """Run the stage(s) selected by ``cfg.stage`` of a config that passed
    :func:`~fustal.config.checks.check_config`; draw the pictures; return the run's metrics (as
    ``metrics.json`` nests them)."""
    quiet_libraries()
    separate_rank_log()
    console = make_console()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.stage == "data":
        return run_data_stage(cfg, console)
    ctx = RunContext(cfg, ensure_writable_dir(run_dir(cfg)), console, load_pipeline_data(cfg))
    if is_global_zero():
        write_with(ctx.output_dir / "config.yaml", lambda tmp: OmegaConf.save(cfg, tmp))
    for line in header(cfg, ctx.output_dir, ctx.data.student):
        ctx.say(line)
    log_scale(cfg)
    with distributed_run(cfg):
        run_plan(ctx, stage_plan(cfg))
    if is_global_zero():
        pictures = draw_pictures(ctx) if cfg.plot_videos > 0 else []
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
    return nest(ctx.metrics)


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


def draw_pictures(ctx: RunContext) -> list[Path]:
    """The run's pictures of its first ``plot_videos`` training and test videos."""
    cfg, data, count = ctx.cfg, ctx.data.student, int(ctx.cfg.plot_videos)
    videos = (
        picture_videos(data.train_videos())[:count],
        picture_videos(data.test_videos())[:count],
    )
    min_score = ctx.metrics.get(
        "pseudo_labels.filter_choice.min_score", cfg.filter.get("min_score")
    )
    # the colour bar marks the filter's score threshold (none when the filter has none)
    threshold = min_score if isinstance(min_score, int | float) else None
    paths = make_pictures(ctx.output_dir, data, videos, ctx.shown, threshold)
    ctx.say(f"pictures: {len(paths)} PNG files in {ctx.output_dir / PICTURES}")
    return paths
