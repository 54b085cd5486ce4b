"""Sweep summaries: ``python -m fustal.summarize SWEEP_DIR`` and the Hydra callback that writes
one when a multirun ends.

Each job dir of the sweep holds ``metrics.json`` and ``.hydra/overrides.yaml``. Jobs that differ
only in ``seed`` form one setting; the summary gives mean and std over seeds of every metric.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
from collections.abc import Mapping
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
from fustal.metrics.table import average_label

HEADLINE = (
    "generator.test.avg",
    "pseudo_labels.raw.avg",
    "pseudo_labels.filtered.avg",
    "student.test.avg",
    "student_ema.test.avg",
)
# a test mAP column of summary.csv: ``student_ema.test.mAP@0.5.mean``
TEST_MAP_KEY = re.compile(r"\w+\.test\.mAP@([\d.]+)\.mean")


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1.0}`` (numbers only)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def collect_jobs(sweep_dir: Path) -> list[tuple[str, dict[str, float]]]:
    """(setting, flat metrics) for every finished job below ``sweep_dir``. A setting is the
    job's overrides that vary across the sweep, ``seed`` excluded (overrides shared by every job
    would only repeat on each row)."""
    found = []
    for metrics_path in sorted(sweep_dir.glob("*/metrics.json")):
        overrides_path = metrics_path.parent / ".hydra" / "overrides.yaml"
        overrides = list(OmegaConf.load(overrides_path)) if overrides_path.is_file() else []
        kept = [o for o in overrides if not o.lstrip("+~").startswith("seed=")]
        found.append((kept, flatten(json.loads(metrics_path.read_text()))))
    shared = set.intersection(*(set(kept) for kept, _ in found)) if len(found) > 1 else set()
    return [
        (" ".join(o for o in kept if o not in shared) or "(defaults)", metrics)
        for kept, metrics in found
    ]


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


def summary_table(rows: list[dict[str, Any]]) -> Table:
    """Rich table of the headline metrics (mean ± std over seeds, in %); the title names the
    average's tIoU range, read off the rows' test mAP keys."""
    thresholds = evaluated_thresholds(rows)
    average = average_label(thresholds) if thresholds else "avg"
    table = Table(title=f"sweep summary ({average} mAP %, mean ± std over seeds)")
    table.add_column("setting")
    table.add_column("runs", justify="right")
    present = [k for k in HEADLINE if any(f"{k}.mean" in r for r in rows)]
    for key in present:
        table.add_column(key.replace(".test", "").replace(".avg", ""), justify="right")
    for row in rows:
        cells = [cell(row, key) for key in present]
        table.add_row(row["setting"], str(row["runs"]), *cells)
    return table


class SweepSummaryCallback(Callback):
    """Hydra callback: after a multirun, summarize the sweep dir (summary.csv + rich table)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            rows = summarize(sweep_dir)
        except FustalError as err:
            print(f"no sweep summary: {err}")
            return
        buffer = io.StringIO()
        Console(file=buffer, width=160).print(summary_table(rows))
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
    make_console().print(summary_table(rows))
    print(f"wrote {args.sweep_dir / 'summary.csv'}")


if __name__ == "__main__":
    main()
