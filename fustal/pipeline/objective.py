"""What ``python -m fustal.train`` returns (the value an ``hparams_search`` optimizes): the
``metrics.json`` entry named by ``optimized_metric``, by default the final model's validation
metric."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig

from fustal.errors import FustalError
from fustal.metrics.shape import VIDEO_MAP, flatten, numbers, sections

# the models of a run, the final one first
MODELS = ("student_ema", "student", "generator")
# validation mode -> the (section, metric) of a model that optimized_metric=null means
DEFAULT_METRIC = {
    "test": ("test", "avg"),
    "heldout": ("val", "avg"),
    "video_labels": ("val", VIDEO_MAP),
}


def metric_path(cfg: DictConfig, metrics: Mapping[str, Any] | None = None) -> str | None:
    """``optimized_metric``, or the default: ``<model>.val.avg`` (``validation=heldout``),
    ``<model>.val.video_map`` (``video_labels``) or ``<model>.test.avg`` (``test``) of the final
    model, read off the flat ``metrics`` when given (else off the config). None: the run trains
    no model (``stage=data|filter``)."""
    if cfg.get("optimized_metric"):
        return str(cfg.optimized_metric)
    section, name = DEFAULT_METRIC[str(cfg.validation.mode)]
    if cfg.stage in ("data", "filter"):
        model = None
    elif metrics is not None:
        model = next((m for m in MODELS if f"{m}.{section}" in sections(metrics)), None)
    elif cfg.stage == "generator":
        model = "generator"
    else:
        model = "student_ema" if cfg.ema.enabled else "student"
    return None if model is None else f"{model}.{section}.{name}"


def optimized_value(cfg: DictConfig, metrics: Mapping[str, Any]) -> float | None:
    """The value of :func:`metric_path` in the run's ``metrics`` (as ``metrics.json`` nests
    them; None when the run trains no model and no ``optimized_metric`` is set); a path the
    metrics lack is a one-line error listing the ones they have."""
    flat = flatten(metrics)
    path = metric_path(cfg, flat)
    if path is None:
        return None
    values = numbers(flat)
    if path not in values:
        section = ".".join(path.split(".")[:2]) + "."
        close = [k for k in values if k.startswith(section)] or list(values)
        raise FustalError(
            f"optimized_metric: {path!r} is not in this run's metrics.json (it has"
            f" {', '.join(close[:6])}{', ...' if len(close) > 6 else ''})"
        )
    return values[path]


def warn_test_search(cfg: DictConfig) -> None:
    """One warning line (stderr; the search starts before the jobs' logging) when a search
    optimizes a metric of the test labels."""
    path = metric_path(cfg)
    if path is not None and ".test." in f".{path}.":
        print(
            f"WARNING: optimized_metric={path} is a test metric: this search tunes on the test"
            " labels (validation=heldout or validation=video_labels select on held-out training"
            " videos)",
            file=sys.stderr,
        )
