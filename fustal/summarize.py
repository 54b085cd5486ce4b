"""Sweep summaries: ``python -m fustal.summarize SWEEP_DIR`` and the Hydra callback that writes
one when a multirun ends.

Each job dir of the sweep holds ``metrics.json`` and ``.hydra/overrides.yaml``. Jobs that differ
only in ``seed`` form one setting; the summary gives mean and std over seeds of every metric, in
job order (an ``hparams_search``: one row per trial), with the optimized metric and the best
setting when the sweep has one.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from fustal.config import make_console
from fustal.errors import FustalError, exit_on_error
from fustal.io import atomic_open
from fustal.metrics.shape import flatten, numbers
from fustal.metrics.table import average_label
from fustal.pipeline.objective import metric_path, warn_test_search

HEADLINE = (
    "generator.test.avg",
    "pseudo_labels.raw.avg",
    "pseudo_labels.filtered.avg",
    "student.test.avg",
    "student_ema.test.avg",
    # validation=heldout (detection mAP) | video_labels (video-level mAP, shown when a model
    # has no detection mAP of the held-out videos)
    "generator.val.avg",
    "generator.val.video_map",
    "student_ema.val.avg",
    "student_ema.val.video_map",
)
# a long number in a setting: shortened in the table (summary.csv keeps it)
LONG_NUMBER = re.compile(r"(?<![\w.])(\d+\.\d{5,})")
# a test mAP column of summary.csv: ``student_ema.test.mAP@0.5.mean``
TEST_MAP_KEY = re.compile(r"\w+\.test\.mAP@([\d.]+)\.mean")


def collect_jobs(sweep_dir: Path) -> list[tuple[str, dict[str, float]]]:
    """(setting, flat metrics) for every finished job below ``sweep_dir``. A setting is the
    job's overrides that vary across the sweep, ``seed`` excluded (overrides shared by every job
    would only repeat on each row)."""
    found = []
    for metrics_path in sorted(sweep_dir.glob("*/metrics.json"), key=job_order):
        overrides_path = metrics_path.parent / ".hydra" / "overrides.yaml"
        overrides = list(OmegaConf.load(overrides_path)) if overrides_path.is_file() else []
        kept = [o for o in overrides if not o.lstrip("+~").startswith("seed=")]
        found.append((kept, numbers(flatten(json.loads(metrics_path.read_text())))))
    shared = set.intersection(*(set(kept) for kept, _ in found)) if len(found) > 1 else set()
    return [
        (" ".join(o for o in kept if o not in shared) or "(defaults)", metrics)
        for kept, metrics in found
    ]


def job_order(metrics_path: Path) -> tuple[int, str]:
    """Sort key of a job's ``metrics.json``: numbered job dirs in numeric order, then others."""
    name = metrics_path.parent.name
    return (int(name), "") if name.isdigit() else (1 << 62, name)


def summarize(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Group jobs by setting and write ``summary.csv`` (mean/std over seeds) into the sweep dir."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FustalError(f"sweep dir not found: {sweep_dir}")
    jobs = collect_jobs(sweep_dir)
    if not jobs:
        raise FustalError(f"{sweep_dir}: no job with a metrics.json")
    settings: dict[str, list[dict[str, float]]] = {}
    for setting, metrics in jobs:
        settings.setdefault(setting, []).append(metrics)
    keys = sorted({k for _, m in jobs for k in m})
    rows = []
    for setting, runs in settings.items():
        row: dict[str, Any] = {"setting": setting, "runs": len(runs)}
        for key in keys:
            values = np.array([r[key] for r in runs if key in r])
            if values.size:
                row[f"{key}.mean"] = float(values.mean())
                # a spread needs two runs at least: "n/a" for one
                row[f"{key}.std"] = float(values.std()) if values.size > 1 else "n/a"
        rows.append(row)
    fields = ["setting", "runs"] + [f"{k}.{s}" for k in keys for s in ("mean", "std")]
    with atomic_open(sweep_dir / "summary.csv") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def cell(row: dict[str, Any], key: str) -> str:
    """``mean ± std`` of ``key`` in %, ``± n/a`` for a single run, ``-`` when absent."""
    if f"{key}.mean" not in row:
        return "-"
    std = row.get(f"{key}.std")
    spread = f"{100 * std:.2f}" if isinstance(std, float) else "n/a"
    return f"{100 * row[f'{key}.mean']:.2f} ± {spread}"


def evaluated_thresholds(rows: list[dict[str, Any]]) -> list[float]:
    """The tIoU thresholds of the test mAPs in ``rows`` (keys ``<variant>.test.mAP@<t>.mean``)."""
    found = {float(m[1]) for row in rows for key in row if (m := TEST_MAP_KEY.fullmatch(key))}
    return sorted(found)


def short(setting: str) -> str:
    """``setting`` with its long numbers rounded to 4 significant digits (for the table)."""
    return LONG_NUMBER.sub(lambda m: f"{float(m[1]):.4g}", setting)


def best_row(rows: list[dict[str, Any]], optimized: str) -> dict[str, Any] | None:
    """The row with the highest mean of ``optimized`` (None when no row has it)."""
    scored = [row for row in rows if f"{optimized}.mean" in row]
    return max(scored, key=lambda row: row[f"{optimized}.mean"]) if scored else None


def sweep_table(rows: list[dict[str, Any]], optimized: str | None = None) -> Table:
    """Rich table of the headline metrics (mean ± std over seeds, in %) and of ``optimized``
    (the metric a search optimized), with the best row's setting in the caption; the title
    names the average's tIoU range, read off the rows' test mAP keys."""
    thresholds = evaluated_thresholds(rows)
    average = average_label(thresholds) if thresholds else "avg"
    table = Table(title=f"sweep summary ({average} mAP %, mean ± std over seeds)")
    # wide enough for its longest override: a setting wraps between overrides, not inside one
    widest = max((len(part) for row in rows for part in short(row["setting"]).split()), default=7)
    table.add_column("setting", min_width=min(widest, 48))
    table.add_column("runs", justify="right")
    keys = [*HEADLINE, *([optimized] if optimized and optimized not in HEADLINE else [])]
    measured = {k.removesuffix(".mean") for row in rows for k in row if k.endswith(".mean")}
    # a model's val video_map column only where it has no val detection mAP (video_labels)
    superseded = {k.replace(".avg", ".video_map") for k in measured if k.endswith(".val.avg")}
    present = [k for k in keys if k in measured and (k == optimized or k not in superseded)]
    for key in present:
        name = key.replace(".test", "").replace(".avg", "").replace("pseudo_labels.", "pseudo ")
        table.add_column(f"{name} (optimized)" if key == optimized else name, justify="right")
    best = best_row(rows, optimized) if optimized else None
    for row in rows:
        cells = [cell(row, key) for key in present]
        style = "bold" if row is best else ""
        table.add_row(short(row["setting"]), str(row["runs"]), *cells, style=style)
    if best is not None and optimized is not None:
        table.caption = f"best {optimized}: {cell(best, optimized)} with {short(best['setting'])}"
    return table


def optimized_metric(config: DictConfig) -> str | None:
    """The metric a sweep's sweeper optimizes (an ``hparams_search``), None for a grid sweep."""
    sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_", default=""))
    return metric_path(config) if "optuna" in sweeper.lower() else None


class SweepSummaryCallback(Callback):
    """Hydra callback: when a search starts, warn if it optimizes a test metric; after a
    multirun, summarize the sweep dir (summary.csv + rich table)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if optimized_metric(config):
            warn_test_search(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            rows = summarize(sweep_dir)
        except FustalError as err:
            print(f"no sweep summary: {err}")
            return
        buffer = io.StringIO()
        Console(file=buffer, width=160).print(sweep_table(rows, optimized_metric(config)))
        text = buffer.getvalue()
        print(text)
        with atomic_open(sweep_dir / "summary.txt") as handle:
            handle.write(text)


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Summarize a fustal multirun sweep.")
    parser.add_argument("sweep_dir", type=Path)
    args = parser.parse_args(argv)
    rows = summarize(args.sweep_dir)
    make_console().print(sweep_table(rows))
    print(f"wrote {args.sweep_dir / 'summary.csv'}")


if __name__ == "__main__":
    main()
