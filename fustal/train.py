"""``python -m fustal.train``: the FuSTAL pipeline as a Hydra app over ``conf/train.yaml``.

Stages (``stage=``): ``data`` (validate and summarize the dataset), ``generator`` (stage 1 and
pseudo labels), ``filter`` (stage 2), ``student`` (stage 3), ``all`` (default: every stage).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from fustal.config import CONFIG_DIR, register_resolvers
from fustal.errors import exit_on_error

register_resolvers()


@exit_on_error
def run(cfg: DictConfig) -> dict:
    from fustal.pipeline.run import run_pipeline

    return run_pipeline(cfg)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
