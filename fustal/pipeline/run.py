"""Stage dispatch for ``python -m fustal.train``."""

from __future__ import annotations

import logging

import pytorch_lightning as pl
from omegaconf import DictConfig
from rich.console import Console

from fustal.config import print_config_tree
from fustal.errors import FustalError
from fustal.pipeline.data import run_data_stage

log = logging.getLogger(__name__)

STAGES = ("data", "generator", "filter", "student", "all")


def run_pipeline(cfg: DictConfig) -> dict:
    """Run the stage(s) selected by ``cfg.stage`` and return the run's metrics."""
    if cfg.stage not in STAGES:
        raise FustalError(f"stage: unknown stage '{cfg.stage}' (one of {', '.join(STAGES)})")
    console = Console()
    print_config_tree(cfg, console=console)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.stage == "data":
        return run_data_stage(cfg, console)
    raise FustalError(f"stage={cfg.stage}: not implemented yet")
