"""What the stages hand each other, apart from the stages' code: a stage reads its upstream's
outputs without importing (or depending on the cache fingerprint of) the upstream's code. The
protocols are what a reader needs of any stage that provides pseudo labels or video-level
scores (the generator, or a file)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fustal.metrics.results import VideoDetections


@runtime_checkable
class PseudoLabelSource(Protocol):
    """Pseudo labels of the training videos (seconds), and where they come from."""

    pseudo_labels: VideoDetections
    source: str
    metrics: dict[str, Any]


@runtime_checkable
class VideoScoreSource(Protocol):
    """Video-level class scores ``{video_id: [C]}``, and where they come from."""

    video_scores: dict[str, np.ndarray]
    source: str


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
    source: str = "the generator"


@dataclass
class FilterOutputs:
    """The filtered pseudo labels, the filter's counts and the quality metrics."""

    filtered: VideoDetections
    stats: dict[str, int]
    metrics: dict[str, Any]
