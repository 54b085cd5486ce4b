"""Configuration: the project-root resolver, printing, hashing and path helpers; the structured
schema of the composed config (:mod:`fustal.config.schema`) and its one-line checks
(:mod:`fustal.config.checks`)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "conf"


def register_resolvers() -> None:
    """``${project_root:}``: the folder holding ``conf/``, whatever the working directory."""
    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))


def to_plain(cfg: Any) -> Any:
    """Resolved plain-Python copy of a config node (dicts, lists, scalars)."""
    if OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def config_hash(*parts: Any, length: int = 12) -> str:
    """Stable content hash of JSON-serializable config parts."""
    text = json.dumps([to_plain(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def run_dir(cfg: DictConfig) -> Path:
    """The run dir: Hydra's output dir inside a Hydra app, else ``paths.output_dir``."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.output_dir)


def selects_best(select: str, mode: str) -> bool:
    """Whether ``select`` chooses the best held-out evaluation under ``validation.mode`` =
    ``mode`` (``auto``: whenever there are held-out videos)."""
    return select == "best" or (select == "auto" and mode != "test")


def chosen_option(group: str) -> str | None:
    """The option a Hydra app chose for config ``group`` (Hydra's record; None outside one)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    choice = HydraConfig.get().runtime.choices.get(group)
    return None if choice is None else str(choice)


def render_text(renderable: Any, width: int = 120) -> str:
    """A rich renderable (a table) as plain text, for log files."""
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def make_console() -> Console:
    """A rich console: the terminal's width, or 120 columns when the output is not a terminal
    (logs, pipes, CI), so that tables are not squeezed to 80 columns."""
    return Console(width=None if sys.stdout.isatty() else 120)


# keys of the train / evaluate / predict configs that hold file-system paths (a key the config
# lacks, or whose value is no string, e.g. train's ``features`` group, is left alone)
PATH_KEYS = (
    "paths.root_dir",
    "paths.data_dir",
    "paths.annotations_dir",
    "paths.log_dir",
    "paths.cache_dir",
    "dataset.root",
    "dataset.synthetic.annotation_file",
    "pseudo_labels",
    "ckpt_path",
    "fusion.score_file",
    "features",
    "out",
    "durations",
    "fusion.generator_ckpt",
    "fusion.generator_features",
)


def absolute_paths(cfg: DictConfig) -> None:
    """Make the relative paths among :data:`PATH_KEYS` absolute against the folder the command
    was started from (Hydra's original working dir), so that ``hydra.job.chdir=true`` and the
    working dir of DDP children or sweep jobs do not change what a path means."""
    from hydra.utils import to_absolute_path

    for key in PATH_KEYS:
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if isinstance(value, str) and value and not os.path.isabs(value):
            OmegaConf.update(cfg, key, to_absolute_path(value))


def target_node(cfg: Any, default: Any, target: Any = None) -> dict[str, Any]:
    """A plain ``_target_`` config for ``hydra.utils.instantiate``: ``cfg`` (None: ``default``
    with its defaults), its ``_target_`` replaced by ``target`` when given."""
    node = dict(to_plain(cfg)) if cfg is not None else {}
    node["_target_"] = target or node.get("_target_") or default
    return node
