"""Stage dispatch for ``python -m fustal.train`` and the end-of-run summary table."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from fustal.config import print_config_tree
from fustal.errors import FustalError
from fustal.pipeline.context import RunContext
from fustal.pipeline.data import load_pipeline_data, run_data_stage

log = logging.getLogger(__name__)

STAGES = ("data", "generator", "filter", "student", "all")


def output_dir(cfg: DictConfig) -> Path:
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.output_dir)


def run_pipeline(cfg: DictConfig) -> dict:
    """Run the stage(s) selected by ``cfg.stage``; return the run's metrics."""
    if cfg.stage not in STAGES:
        raise FustalError(f"stage: unknown stage '{cfg.stage}' (one of {', '.join(STAGES)})")
    if cfg.supervision not in ("weak", "full"):
        raise FustalError(f"supervision: expected weak or full, got '{cfg.supervision}'")
    console = Console(width=None if sys.stdout.isatty() else 120)
    print_config_tree(cfg, console=console)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.stage == "data":
        return run_data_stage(cfg, console)

    from fustal.pipeline.generator_stage import run_generator_stage
    from fustal.pipeline.student_stage import (
        pseudo_label_file_key,
        run_filter_stage,
        run_student_stage,
    )

    ctx = RunContext(cfg, output_dir(cfg), console)
    data = load_pipeline_data(cfg)
    full = cfg.supervision == "full"
    pseudo_path = Path(cfg.pseudo_labels) if cfg.pseudo_labels else None
    upstream: object = "ground-truth" if full else None
    if not full and pseudo_path is None and cfg.stage in ("generator", "filter", "all"):
        gen = run_generator_stage(ctx, data.generator)
        pseudo_path, upstream = gen["pseudo_labels"], gen["key"]
    if cfg.stage == "generator":
        console.print(results_table(ctx.metrics))
        return ctx.metrics
    filtered = None
    if not full:
        if pseudo_path is None:
            raise FustalError(
                "pseudo_labels: stage=student needs pseudo labels: run stage=all or pass"
                " pseudo_labels=PATH (an ActivityNet results file)"
            )
        if upstream is None:
            upstream = pseudo_label_file_key(pseudo_path)
        filtered = run_filter_stage(ctx, data.student, pseudo_path)
        if cfg.stage == "filter":
            console.print(results_table(ctx.metrics))
            return ctx.metrics
    run_student_stage(ctx, data.student, filtered, {"pseudo": upstream, "filter": cfg.filter})
    console.print(results_table(ctx.metrics, cfg.supervision))
    return ctx.metrics


ROWS = (
    ("generator (test)", "generator.test", "avg"),
    ("pseudo labels, raw (train)", "pseudo_labels.raw", "avg_mAP"),
    ("pseudo labels, filtered (train)", "pseudo_labels.filtered", "avg_mAP"),
    ("student (test)", "student.test", "avg"),
    ("student + EMA (test)", "student_ema.test", "avg"),
)


def results_table(metrics: dict, supervision: str = "weak") -> Table:
    """One table: generator, raw/filtered pseudo-label quality, student, student+EMA."""
    table = Table(title="fustal results (mAP in %)")
    for col in ("", "mAP@0.3", "mAP@0.5", "mAP@0.7", "avg mAP", "count", "prec@0.5", "rec@0.5"):
        table.add_column(col, justify="left" if not col else "right")
    for label, key, avg_key in ROWS:
        if supervision == "full":
            label = label.replace("student", "upper bound: student on ground truth")
        node = metrics
        for part in key.split("."):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if not node:
            continue

        def pct(name: str, node: dict = node) -> str:
            return f"{100 * node[name]:.2f}" if name in node else "-"

        count = str(node["count"]) if "count" in node else "-"
        table.add_row(
            label,
            pct("mAP@0.3"),
            pct("mAP@0.5"),
            pct("mAP@0.7"),
            pct(avg_key),
            count,
            pct("precision@0.5"),
            pct("recall@0.5"),
        )
    return table
