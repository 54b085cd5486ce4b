"""What a stage module receives from the data besides its config: the feature dimension, the
classes, the evaluation thresholds, and the feature timing that checkpoints store for
``fustal.predict``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from fustal.data.dataset import StageData


def feature_timing(data: StageData) -> dict[str, Any]:
    """What converts a stage's feature steps to seconds, and what made its features: the layout,
    window and stride in frames and the fps (``features.fps``, else the most common fps of the
    dataset's videos; ``fps_varies`` says whether their fps differ), ``steps`` (resized layout:
    the length every video was resized to, None when they differ) and ``extractor`` (the
    features' record, e.g. from their ``features.json``; None: unknown)."""
    spec = data.features
    counts = Counter(v.fps for v in data.annotations.videos.values() if v.fps is not None)
    fps = spec.fps if spec.fps is not None else (counts.most_common(1)[0][0] if counts else None)
    lengths = {int(t) for s in data.summaries or [] for t in s.lengths}
    return {
        "layout": spec.layout,
        "window_frames": spec.window_frames,
        "stride_frames": spec.stride_frames,
        "fps": None if fps is None else float(fps),
        "fps_varies": spec.fps is None and len(counts) > 1,
        "steps": lengths.pop() if spec.layout == "resized" and len(lengths) == 1 else None,
        "extractor": spec.extractor,
    }


# what every stage module receives from the data (:func:`module_arguments`), besides its config
MODULE_ARGUMENTS = ("feature_dim", "num_classes", "tiou_thresholds", "classes", "feature_timing")


def module_arguments(data: StageData, tiou_thresholds: Sequence[float]) -> dict[str, Any]:
    """A stage module's arguments that come from the data (:data:`MODULE_ARGUMENTS`): feature
    dimension, classes, the evaluation thresholds and the feature timing (metadata for
    ``fustal.predict``)."""
    values = (
        data.feature_dim(),
        data.num_classes,
        list(tiou_thresholds),
        data.classes,
        feature_timing(data),
    )
    return dict(zip(MODULE_ARGUMENTS, values, strict=True))
