"""Score an ActivityNet results file against ground truth.

Usage::

    python -m fustal.score GT_JSON PRED_JSON [--subset test] [--tiou 0.1 0.2 ...] [--json]

Prints a table of mAP per tIoU threshold and their mean, or with ``--json`` the object
``{"mAP@0.1": ..., ..., "avg": ...}``. Bad input: one line ``error: ...`` on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from fustal.config import make_console
from fustal.data.annotations import load_annotations
from fustal.errors import FustalError, exit_on_error
from fustal.metrics.detection import THUMOS_TIOU, check_thresholds, detection_map
from fustal.metrics.results import gt_to_detections, read_results, results_to_detections


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments of ``python -m fustal.score``."""
    parser = argparse.ArgumentParser(
        prog="python -m fustal.score", description="ActivityNet detection mAP of a results file."
    )
    parser.add_argument("gt", help="ground-truth annotations (ActivityNet schema or WTAL gt.json)")
    parser.add_argument("pred", help='results file {"results": {vid: [{label, score, segment}]}}')
    parser.add_argument("--subset", default="test", help="GT subset to evaluate on")
    parser.add_argument(
        "--tiou", type=float, nargs="+", default=list(THUMOS_TIOU), help="tIoU thresholds"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser.parse_args(argv)


def score(gt_path: str, pred_path: str, subset: str, tiou: Sequence[float]) -> dict[str, float]:
    """mAP of ``pred_path`` against the ``subset`` videos of ``gt_path`` (GT segments unclipped)."""
    annotations = load_annotations(gt_path, clip_to_duration=False)
    gt, video_ids = gt_to_detections(annotations.subset(subset))
    results = read_results(pred_path)
    check_thresholds(tiou)
    check_overlap(list(results), video_ids, pred_path, gt_path, subset)
    pred = results_to_detections(results, annotations.classes, video_ids)
    return detection_map(gt, pred, tiou, annotations.num_classes)


def check_overlap(
    predicted: list[str], video_ids: list[str], pred_path: str, gt_path: str, subset: str
) -> None:
    """A results file that names none of the subset's videos is an error (it would score 0 with
    exit code 0); one that names only some of them gets a warning on stderr."""
    known = set(video_ids)
    shared = [vid for vid in predicted if vid in known]
    if not shared:
        first = predicted[0] if predicted else "none"
        raise FustalError(
            f"{pred_path}: none of its {len(predicted)} videos is in the '{subset}' subset of"
            f" {gt_path} (first: {first}); wrong --subset or ground-truth file?"
        )
    missing = len(known) - len(shared)
    if missing or len(shared) < len(predicted):
        print(
            f"warning: {pred_path}: {len(shared)} of its {len(predicted)} videos are in the"
            f" '{subset}' subset ({missing} of the subset's {len(known)} videos have no"
            " detections and count as misses)",
            file=sys.stderr,
        )


def print_table(result: dict[str, float], title: str) -> None:
    """Rich table: one row per threshold, then the average, in percent."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("tIoU")
    table.add_column("mAP (%)", justify="right")
    for key, value in result.items():
        name = "avg" if key == "avg" else key.removeprefix("mAP@")
        table.add_row(name, f"{100 * value:.2f}")
    make_console().print(table)


@exit_on_error
def main(argv: Sequence[str] | None = None) -> None:
    """Entry point."""
    args = parse_args(argv)
    result = score(args.gt, args.pred, args.subset, args.tiou)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result, f"{Path(args.pred).name} ({args.subset})")


if __name__ == "__main__":
    main()
