"""The ``logger`` group instantiated per stage: CSV and TensorBoard write one version folder per
stage, W&B logs every stage of a run into one W&B run (metric names carry the stage prefix)."""

from __future__ import annotations

import netrc
import os
from typing import Any

import hydra
from omegaconf import DictConfig

from fustal.config import to_plain


def make_loggers(cfg: DictConfig, stage: str) -> list[Any]:
    """The configured loggers for one stage (``summary`` for the end-of-run results)."""
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
        name=spec.get("name") or wandb_run_name(),
    )
    # ``config`` is also the name of instantiate's first parameter: pass it afterwards
    return make(config=config)


def wandb_run_name() -> str | None:
    """The sweep job's overrides as the run name (None outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    overrides = HydraConfig.get().overrides.task
    return ",".join(overrides) if overrides else None
