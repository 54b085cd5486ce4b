"""Precision and recall of pseudo labels against ground truth as a function of the tIoU
threshold (one-to-one matching of :func:`~fustal.metrics.detection.match_predictions`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from fustal.metrics.detection import Detections
from fustal.metrics.quality import precision_recall
from fustal.viz.save import new_figure, save_png

# 0.1, 0.15, ..., 0.9
PR_TIOU = tuple(round(0.05 * k, 2) for k in range(2, 19))


def plot_precision_recall(
    path: str | os.PathLike,
    tiou_thresholds: Sequence[float],
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    counts: Mapping[str, int] | None = None,
    title: str = "pseudo labels vs ground truth (training videos)",
) -> Path:
    """Plot ``{name: (precision [K], recall [K])}`` against the tIoU thresholds (precision
    solid, recall dashed, one color per name; ``counts`` adds the label count to the legend)
    and write a PNG at ``path``."""
    fig = new_figure(7.0, 4.5)
    ax = fig.subplots()
    x = np.asarray(tiou_thresholds, np.float64)
    for i, (name, (precision, recall)) in enumerate(curves.items()):
        label = f"{name} ({counts[name]})" if counts and name in counts else name
        color = f"C{i}"
        ax.plot(x, precision, color=color, marker="o", ms=3, label=f"{label}: precision")
        ax.plot(x, recall, color=color, marker="s", ms=3, ls="--", label=f"{label}: recall")
    ax.set_xlabel("tIoU threshold")
    ax.set_ylabel("precision / recall")
    ax.set_ylim(0.0, 1.02)
    if x.size:
        ax.set_xlim(x.min(), x.max())
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return save_png(fig, path)


def pr_summary(
    gt: Detections,
    preds: Mapping[str, Detections],
    num_classes: int,
    tiou_thresholds: Sequence[float] = PR_TIOU,
) -> dict:
    """``{"tiou": [K], "num_gt": int, "curves": {name: {"count", "precision", "recall"}}}``: the
    JSON-ready input of :func:`plot_precision_recall` for several prediction sets."""
    curves = {}
    for name, pred in preds.items():
        precision, recall = precision_recall(gt, pred, tiou_thresholds, num_classes)
        curves[name] = {
            "count": len(pred),
            "precision": precision.tolist(),
            "recall": recall.tolist(),
        }
    return {"tiou": [float(t) for t in tiou_thresholds], "num_gt": len(gt), "curves": curves}
