"""The generator stage's outputs, apart from the stage's code: the filter reads them without
running (or depending on the cache fingerprint of) the generator's training code."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fustal.metrics.results import VideoDetections


@dataclass
class GeneratorOutputs:
    """Pseudo labels (training videos) and test detections, in seconds; the video-level class
    scores ``[C]`` of the training, held-out and test videos; the stage's metrics
    (``generator.test``, ``pseudo_labels.raw``, ``generator.val`` with held-out videos); the CAS
    of the picture videos; the checkpoint; the detections on the held-out videos."""

    pseudo_labels: VideoDetections
    test: VideoDetections
    video_scores: dict[str, np.ndarray]
    metrics: dict[str, Any]
    cas: dict[str, dict[str, Any]]
    checkpoint: Path
    val: VideoDetections
