"""What a run prints about itself before its stages: the header (what runs, on which data and
device, where the outputs go) and the values the ``scale`` option sets."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import torch
from omegaconf import DictConfig, OmegaConf

from fustal.config import CONFIG_DIR, chosen_option
from fustal.data.dataset import StageData
from fustal.metrics.shape import flatten

log = logging.getLogger(__name__)


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
    choice = chosen_option("scale")
    path = CONFIG_DIR / "scale" / f"{choice}.yaml"
    if not choice or not path.is_file():
        return "", []
    values = flatten(cast(dict[str, Any], OmegaConf.to_container(OmegaConf.load(path))))
    return str(choice), [f"{key}={OmegaConf.select(cfg, key)}" for key in values]


def header(cfg: DictConfig, output_dir: Path, data: StageData) -> list[str]:
    """The run's first lines: what runs, on which data and device, where the outputs go, and
    how many values the ``scale`` option sets (the full config is ``config.yaml`` in the run
    dir; the values the scale sets are listed in the log, :func:`log_scale`)."""
    train, test = len(data.train_videos()), len(data.test_videos())
    what = "ground truth (upper bound)" if cfg.supervision == "full" else "video labels"
    cache = f"stage cache {cfg.paths.cache_dir}" if cfg.cache else "no stage cache"
    dataset = chosen_option("dataset") or data.features.root
    lines = [
        f"fustal: stage={cfg.stage} on {dataset} ({train} training / {test} test"
        f" videos, {data.num_classes} classes, {data.feature_dim()}-d features) from {what};"
        f" {device_summary(cfg.trainer)}, seed {cfg.seed}",
        f"run dir {output_dir} (the full config: config.yaml); {cache}",
    ]
    if data.heldout:
        mode = cfg.validation.mode
        labels = "segment labels" if mode == "heldout" else "video labels only"
        lines.append(
            f"validation={mode}: {len(data.heldout)} training videos held out (seed"
            f" {cfg.validation.seed}, not trained on), scored as val with their {labels}"
        )
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
