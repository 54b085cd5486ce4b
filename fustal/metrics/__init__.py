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
    tiou_matrix,
)
from fustal.metrics.quality import pseudo_label_quality
from fustal.metrics.results import (
    gt_to_detections,
    proposals_to_results,
    read_results,
    results_to_detections,
)

__all__ = [
    "DetectionMAP",
    "Detections",
    "average_precision",
    "detection_map",
    "gt_to_detections",
    "match_predictions",
    "proposals_to_results",
    "pseudo_label_quality",
    "read_results",
    "results_to_detections",
    "tiou_key",
    "tiou_matrix",
]


def __getattr__(name: str) -> Any:
    if name == "DetectionMAP":
        from fustal.metrics.torchmetric import DetectionMAP

        return DetectionMAP
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
