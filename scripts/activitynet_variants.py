"""The ActivityNet recipe on ActivityNet-shaped synthetic data: the development set
(``+experiment=activitynet13_synthetic``) and generated variants of it (other seeds, class
counts, action lengths and counts per video), each with the weakly supervised pipeline and the
fully supervised upper bound (``supervision=full``), as ``python -m fustal.train`` runs them.

Per variant it reports the generator at its last and at its selected step, the pseudo labels'
precision and recall (raw and filtered), the student, the student + EMA and the upper bound, on
the test videos, plus the held-out (``val``) values. As a diagnostic only, the generator's test
mAP is also measured at every held-out evaluation (:class:`TestCurve`, a callback added to the
run): it tells whether the held-out choice of the step also won on the test videos; nothing is
chosen on it.

    python scripts/activitynet_variants.py                         # every variant
    python scripts/activitynet_variants.py --variants dev,classes10 --kinds weak
    python scripts/activitynet_variants.py --extra student.epochs_pseudo=20  # try a change

Writes ``<out>/<variant>/<kind>/`` (run dirs), ``<out>/results.json`` and prints a Markdown table;
``--record`` also writes their rows into ``docs/benchmarks/activitynet_variants.json`` (replacing
those variants' rows, keeping the others, each row with its thread count); ``--collect`` reads the
finished run dirs under ``--out`` instead of running (to assemble variants run one at a time).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(SCRIPTS))

# dataset.synthetic overrides of each variant (the development set: none)
VARIANTS: dict[str, list[str]] = {
    "dev": [],
    "classes10": ["dataset.synthetic.seed=1", "dataset.synthetic.num_classes=10"],
    "classes50": [
        "dataset.synthetic.seed=2",
        "dataset.synthetic.num_classes=50",
        "dataset.synthetic.train_videos=400",
        "dataset.synthetic.test_videos=100",
    ],
    "short_actions": [
        "dataset.synthetic.seed=3",
        "dataset.synthetic.action_coverage_median=0.3",
        "dataset.synthetic.second_action_prob=0.5",
    ],
    # THUMOS-like rather than ActivityNet-like: short actions, most videos with two
    "very_short_actions": [
        "dataset.synthetic.seed=3",
        "dataset.synthetic.action_coverage_median=0.2",
        "dataset.synthetic.second_action_prob=0.7",
    ],
    "long_actions": [
        "dataset.synthetic.seed=4",
        "dataset.synthetic.action_coverage_median=0.8",
        "dataset.synthetic.action_coverage_sigma=0.3",
        "dataset.synthetic.second_action_prob=0.1",
    ],
}
# real20: real ActivityNet v1.3 durations and segments (synthetic features) of 20 classes, 15
# training and 5 validation videos each (:func:`real_annotations`)
REAL_CLASSES, REAL_TRAIN, REAL_VAL = 20, 15, 5
KINDS = {"weak": [], "full": ["supervision=full"]}
CURVE_FILE = "generator_curve.json"
RECORD = ROOT / "docs" / "benchmarks" / "activitynet_variants.json"


class TestCurve(pl.Callback):
    """Diagnostic: the generator's test mAP (``avg``) at every evaluation of its training, with
    the held-out value it was chosen by, written to ``path`` as ``{step: {"val", "test"}}``."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from fustal.generator.module import GeneratorModule
        from fustal.metrics.results import score_rows

        if not isinstance(pl_module, GeneratorModule) or trainer.sanity_checking:
            return
        dm: Any = trainer.datamodule  # type: ignore[attr-defined]
        rows = {}
        with torch.no_grad():
            for batch in dm.loader("test"):
                detections = pl_module.evaluated_detections(batch)["generator"]
                rows.update(zip(batch["video_id"], detections, strict=True))
        data = dm.data
        test = score_rows(
            rows, dm.videos["test"], data.num_classes, pl_module.hparams.tiou_thresholds
        )
        val = trainer.callback_metrics.get("generator/val/avg")
        curve = json.loads(self.path.read_text()) if self.path.is_file() else {}
        curve[str(trainer.global_step)] = {
            "val": None if val is None else float(val),
            "test": test["avg"],
        }
        self.path.write_text(json.dumps(curve, indent=1))


def real_annotations(folder: Path) -> Path:
    """An annotation file of real ActivityNet v1.3 videos (the bundled file), written into
    ``folder`` once (its path is part of the dataset's identity): the first
    :data:`REAL_CLASSES` classes in name order with at least :data:`REAL_TRAIN` training and
    :data:`REAL_VAL` validation videos of that class alone, and those first videos of each in id
    order."""
    path = folder / "activitynet13_real20.json"
    if path.is_file():
        return path
    source = ROOT / "data" / "annotations" / "activitynet13" / "activitynet13.json"
    database = json.loads(source.read_text())["database"]
    by_class: dict[str, dict[str, list[str]]] = {}
    for vid in sorted(database):
        entry = database[vid]
        labels = {a["label"] for a in entry.get("annotations", [])}
        if len(labels) == 1 and entry["subset"] in ("training", "validation"):
            by_class.setdefault(labels.pop(), {}).setdefault(entry["subset"], []).append(vid)
    wanted = {"training": REAL_TRAIN, "validation": REAL_VAL}
    classes = [
        c
        for c in sorted(by_class)
        if all(len(by_class[c].get(s, [])) >= n for s, n in wanted.items())
    ][:REAL_CLASSES]
    chosen = {v for c in classes for s, n in wanted.items() for v in by_class[c][s][:n]}
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"database": {v: database[v] for v in sorted(chosen)}}))
    return path


def variant_overrides(variant: str) -> list[str]:
    """The dataset overrides of ``variant``."""
    if variant != "real20":
        return VARIANTS[variant]
    return [
        f"dataset.synthetic.annotation_file={real_annotations(ROOT / 'data' / 'synthetic')}",
        f"dataset.synthetic.train_videos={REAL_CLASSES * REAL_TRAIN}",
        f"dataset.synthetic.test_videos={REAL_CLASSES * REAL_VAL}",
    ]


def run(variant: str, kind: str, out: Path, extra: list[str], cache: Path) -> dict[str, Any]:
    """One ``fustal.train`` run in this process; returns its metrics and the generator curve."""
    from hydra import compose, initialize_config_dir

    from fustal.config import CONFIG_DIR, register_resolvers
    from fustal.pipeline.run import run_pipeline

    run_dir = out / variant / kind
    curve = run_dir / CURVE_FILE
    overrides = [
        "+experiment=activitynet13_synthetic",
        *variant_overrides(variant),
        *KINDS[kind],
        *extra,
        f"paths.output_dir={run_dir}",
        f"paths.cache_dir={cache}",
        "plot_videos=0",
        "trainer.enable_progress_bar=false",
    ]
    if kind == "weak":
        target = "{_target_:activitynet_variants.TestCurve,path:'" + str(curve) + "'}"
        overrides.append(f"+callbacks.test_curve={target}")
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    start = time.perf_counter()
    metrics = run_pipeline(cfg)
    seconds = time.perf_counter() - start
    steps = json.loads(curve.read_text()) if curve.is_file() else {}
    return {"overrides": overrides[:-4], "metrics": metrics, "curve": steps, "seconds": seconds}


def collected(variant: str, kind: str, out: Path) -> dict[str, Any]:
    """The metrics and generator curve of a finished run of :func:`run` under ``out``."""
    run_dir = out / variant / kind
    metrics_file, curve = run_dir / "metrics.json", run_dir / CURVE_FILE
    if not metrics_file.is_file():
        raise SystemExit(f"{metrics_file}: no finished run of {variant} ({kind}) to collect")
    steps = json.loads(curve.read_text()) if curve.is_file() else {}
    return {"metrics": json.loads(metrics_file.read_text()), "curve": steps}


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def summary(variant: str, runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The figures of one variant's runs."""
    row: dict[str, Any] = {"variant": variant}
    weak = runs.get("weak")
    if weak:
        m, curve = weak["metrics"], weak["curve"]
        steps = sorted(curve, key=int)
        selected = m["generator"].get("selected", {})
        row["generator_last"] = curve[steps[-1]]["test"] if steps else None
        row["generator_selected_step"] = selected.get("step")
        row["generator"] = m["generator"]["test"]["avg"]
        if steps:
            best_test = max(steps, key=lambda s: (curve[s]["test"], -int(s)))
            row["generator_test_best_step"] = int(best_test)
            row["generator_test_best"] = curve[best_test]["test"]
        for which in ("raw", "filtered"):
            quality = m["pseudo_labels"][which]
            row[f"pseudo_{which}_precision"] = quality["precision@0.5"]
            row[f"pseudo_{which}_recall"] = quality["recall@0.5"]
        for model in ("student", "student_ema"):
            row[model] = m[model]["test"]["avg"]
            row[f"{model}_val"] = m[model].get("val", {}).get("avg")
        row["generator_val"] = m["generator"].get("val", {}).get("avg")
        row["curve"] = curve
    full = runs.get("full")
    if full:
        row["upper_bound"] = full["metrics"]["student_ema"]["test"]["avg"]
    return row


def table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of :func:`summary` rows (test avg mAP 0.5:0.95 in %)."""
    head = (
        "| variant | generator last / selected (step) | test-best step | pseudo P/R raw ->"
        " filtered | student | student + EMA | EMA - generator | upper bound |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        gap = None if r.get("student_ema") is None else 100 * (r["student_ema"] - r["generator"])
        lines.append(
            f"| {r['variant']} | {pct(r.get('generator_last'))} / {pct(r.get('generator'))}"
            f" ({r.get('generator_selected_step')}) | {r.get('generator_test_best_step')}"
            f" | {pct(r.get('pseudo_raw_precision'))}/{pct(r.get('pseudo_raw_recall'))} ->"
            f" {pct(r.get('pseudo_filtered_precision'))}/{pct(r.get('pseudo_filtered_recall'))}"
            f" | {pct(r.get('student'))} | {pct(r.get('student_ema'))}"
            f" | {'-' if gap is None else f'{gap:+.1f}'} | {pct(r.get('upper_bound'))} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default=",".join([*VARIANTS, "real20"]))
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--extra", nargs="*", default=[], help="overrides for every run")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "variants")
    parser.add_argument("--cache", type=Path, help="stage cache (default: <out>/cache)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--record", action="store_true", help="write docs/benchmarks/...json")
    parser.add_argument("--collect", action="store_true", help="read finished runs, run none")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("WANDB_MODE", "offline")
    rows = []
    for variant in args.variants.split(","):
        cache = args.cache or args.out / "cache"
        kinds = args.kinds.split(",")
        runs = {
            kind: collected(variant, kind, args.out)
            if args.collect
            else run(variant, kind, args.out, args.extra, cache)
            for kind in kinds
        }
        # --collect: the runs' thread counts are not known here
        threads = None if args.collect else args.threads
        rows.append({**summary(variant, runs), "extra": args.extra, "threads": threads})
        print(table(rows[-1:]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"rows": rows}, indent=1))
    if args.record:
        record(rows)
    print(table(rows))


def record(rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` into :data:`RECORD`: a variant's earlier row is replaced, the other
    variants' rows are kept in their order."""
    kept = json.loads(RECORD.read_text())["rows"] if RECORD.is_file() else []
    new = {row["variant"]: row for row in rows}
    merged = [new.pop(row["variant"], row) for row in kept] + list(new.values())
    RECORD.write_text(json.dumps({"rows": merged}, indent=1))


if __name__ == "__main__":
    main()
