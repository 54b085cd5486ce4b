"""The results table of a run (or of ``fustal.evaluate``): generator, pseudo-label quality,
student and student + EMA, with columns that follow the dataset's tIoU thresholds."""

from __future__ import annotations

from rich import box
from rich.table import Table

from fustal.metrics.shape import sections

ROWS = (
    ("generator", "generator.test"),
    ("pseudo, raw", "pseudo_labels.raw"),
    ("pseudo, filtered", "pseudo_labels.filtered"),
    ("student", "student.test"),
    ("student + EMA", "student_ema.test"),
    # validation=heldout|video_labels
    ("generator, val", "generator.val"),
    ("student, val", "student.val"),
    ("student + EMA, val", "student_ema.val"),
)
# thresholds shown as columns when the dataset evaluates at them (THUMOS, ActivityNet)
SHOWN_TIOU = ((0.3, 0.5, 0.7), (0.5, 0.75, 0.95))


def shown_thresholds(tiou_thresholds: list[float]) -> list[float]:
    """Three thresholds for the table: the usual ones of the dataset's evaluation, else the
    first, middle and last."""
    rounded = [round(float(t), 4) for t in tiou_thresholds]
    for shown in SHOWN_TIOU:
        if all(t in rounded for t in shown):
            return list(shown)
    return sorted({rounded[0], rounded[len(rounded) // 2], rounded[-1]})


def average_label(tiou_thresholds: list[float]) -> str:
    """``avg 0.1:0.7``: the average's name with its range."""
    return f"avg {min(tiou_thresholds):g}:{max(tiou_thresholds):g}"


def results_table(metrics: dict, tiou_thresholds: list[float], supervision: str = "weak") -> Table:
    """One table of the (flat) ``metrics``: generator, raw/filtered pseudo-label quality
    (training videos), student, student+EMA (test videos), and their val rows (held-out
    training videos, with a video-level mAP column); mAP columns follow the dataset's
    thresholds."""
    shown = shown_thresholds(tiou_thresholds)
    grouped = sections(metrics)
    validated = any(section.endswith(".val") for section in grouped)
    held_out = " val: on the held-out training videos;" if validated else ""
    table = Table(
        title="fustal results (mAP %)",
        caption=f"pseudo labels: on the training videos;{held_out} the others: on the test videos",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("", no_wrap=True)
    for name in (*(f"@{t:g}" for t in shown), average_label(tiou_thresholds)):
        table.add_column(name, justify="right", no_wrap=True)
    for name in ("count", "prec@.5", "rec@.5", *(["video mAP"] if validated else [])):
        table.add_column(name, justify="right", no_wrap=True)
    for label, key in ROWS:
        if supervision == "full":
            label = label.replace("student", "upper bound")
        node = grouped.get(key)
        if not node:
            continue

        def pct(name: str, node: dict = node) -> str:
            return f"{100 * node[name]:.2f}" if name in node else "-"

        table.add_row(
            label,
            *(pct(f"mAP@{t:g}") for t in shown),
            pct("avg"),
            str(node["count"]) if "count" in node else "-",
            pct("precision@0.5"),
            pct("recall@0.5"),
            *([pct("video_map")] if validated else []),
        )
    return table
