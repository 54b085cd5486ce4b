"""Evaluation: ActivityNet detection mAP, results files and pseudo-label quality.

``DetectionMAP`` (torchmetrics) is imported lazily so that numpy-only users such as
``python -m fustal.score`` do not pay for importing torch.
"""

from typing import Any

from fustal.metrics.detection import (
    Detections,
    average_precision,
    detection_map,
    match_predictions,
    tiou_key,
)
from fustal.metrics.quality import pseudo_label_quality, rows_quality
from fustal.metrics.results import (
    VideoDetections,
    gt_to_detections,
    read_results,
    results_to_detections,
    results_to_rows,
    rows_to_detections,
    rows_to_results,
    score_rows,
)

__all__ = [
    "DetectionMAP",
    "Detections",
    "average_precision",
    "detection_map",
    "gt_to_detections",
    "match_predictions",
    "VideoDetections",
    "pseudo_label_quality",
    "read_results",
    "results_to_detections",
    "results_to_rows",
    "rows_quality",
    "rows_to_detections",
    "rows_to_results",
    "score_rows",
    "tiou_key",
]


def __getattr__(name: str) -> Any:
    if name == "DetectionMAP":
        from fustal.metrics.torchmetric import DetectionMAP

        return DetectionMAP
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
