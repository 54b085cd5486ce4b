"""``python -m fustal.train``: the FuSTAL pipeline as a Hydra app over ``conf/train.yaml``.

Stages (``stage=``): ``data`` (validate and summarize the dataset), ``generator`` (stage 1 and
pseudo labels), ``filter`` (stage 2), ``student`` (stage 3), ``all`` (default: every stage).
"""

from __future__ import annotations

from typing import Any

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from fustal.config import CONFIG_DIR, absolute_paths, register_resolvers
from fustal.errors import exit_on_error
from fustal.io import ensure_writable_dir

register_resolvers()


class OutputDirCheck(Callback):
    """Hydra callback: before Hydra creates the run (or sweep) dir and writes ``.hydra/`` into
    it, check that the folder can be written; if not, print one ``error:`` line and exit 2."""

    @exit_on_error
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        ensure_writable_dir(str(OmegaConf.select(config, "hydra.run.dir")))

    @exit_on_error
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        ensure_writable_dir(str(OmegaConf.select(config, "hydra.sweep.dir")))


@exit_on_error
def run(cfg: DictConfig) -> float | None:
    """Run the pipeline; return its ``optimized_metric`` (fustal.pipeline.objective). The config
    is checked before the pipeline imports torch and Lightning, so that a mistake in it is
    reported within about a second."""
    from fustal.config.checks import check_config

    check_config(cfg)
    from fustal.pipeline.objective import optimized_value
    from fustal.pipeline.run import run_checked

    return optimized_value(cfg, run_checked(cfg))


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """The Hydra app; returns the run's ``optimized_metric``, what ``hparams_search`` (the
    Optuna sweeper) maximizes."""
    absolute_paths(cfg)
    return run(cfg)


if __name__ == "__main__":
    main()
