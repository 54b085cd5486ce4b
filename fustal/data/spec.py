"""The ``dataset`` and ``features`` config nodes as the data layer takes them: the one statement
of their keys and defaults (the config schema, :mod:`fustal.config.schema`, is these classes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class DatasetConfig:
    """The ``dataset`` node: the folder the views' files are relative to (null: the synthetic
    dataset of the ``synthetic`` parameters, :class:`fustal.data.synthetic.SyntheticConfig`), the
    class list (null: the annotation file's), the evaluation's tIoU thresholds, and whether videos
    without feature files are skipped (else an error)."""

    root: str | None = None
    classes: list[str] | None = None
    tiou_thresholds: list[float] = field(
        default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    )
    skip_missing: bool = False
    synthetic: Any = None


@dataclass
class ViewConfig:
    """A ``features`` node: one stage's view of the dataset, its annotation file with the train
    and test subsets and its feature files: their layout, path template, streams and timing (keys
    left null: the sidecar's; ``fps`` null there too: each video's own)."""

    layout: str = "overlap"
    annotation_file: str = "annotations/thumos14.json"
    annotation_format: str = "auto"
    split_files: dict[str, str] | None = None
    train_subset: str = "validation"
    test_subset: str = "test"
    path: str = "i3d_features/{video}.npy"
    streams: list[str] | None = None
    window_frames: float | None = None
    stride_frames: float | None = None
    fps: float | None = None
    dim: int | None = None
    # video table (video,duration,fps) of CSV annotations
    video_table: str | None = None
    # features.json beside the features: fps / window / stride / extractor for the keys left null
    sidecar: str | None = None
    # what made the features (fustal.extract's record); stored in checkpoints for fustal.predict
    extractor: dict[str, Any] | None = None
