"""A dataset as one stage sees it: annotations of one file plus the features of one layout."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fustal.data.annotations import Annotations, Video, load_annotations
from fustal.data.features import FeatureSpec
from fustal.errors import FustalError

log = logging.getLogger(__name__)


@dataclass
class SubsetSummary:
    """Statistics of one subset: counts and feature length / dimension."""

    subset: str
    videos: int
    instances: int
    classes_present: int
    lengths: np.ndarray
    dim: int
    skipped: int


@dataclass
class StageData:
    """Annotations and features one stage reads (generator: non-overlapping layout, student:
    overlapping layout), with the train/test subset names of that annotation file."""

    annotations: Annotations
    features: FeatureSpec
    train_subset: str
    test_subset: str
    skipped: dict[str, list[str]] = field(default_factory=dict)
    summaries: list[SubsetSummary] | None = None

    @property
    def classes(self) -> list[str]:
        return self.annotations.classes

    @property
    def num_classes(self) -> int:
        return self.annotations.num_classes

    def videos(self, subset: str) -> list[Video]:
        """Videos of a subset that have features (see ``dataset.skip_missing``)."""
        skipped = set(self.skipped.get(subset.lower(), ()))
        return [v for v in self.annotations.subset(subset) if v.id not in skipped]

    def train_videos(self) -> list[Video]:
        return self.videos(self.train_subset)

    def feature_dim(self) -> int:
        """The feature dimension (validated equal for every video)."""
        if self.summaries:
            return self.summaries[0].dim
        return int(self.features.load(self.train_videos()[0]).shape[1])

    def test_videos(self) -> list[Video]:
        return self.videos(self.test_subset)


def _resolve(root: Path, path: str | None) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    return p if p.is_absolute() else root / p


def load_stage_data(
    dataset_cfg: Mapping[str, Any],
    features_cfg: Mapping[str, Any],
    classes: Sequence[str] | None = None,
    validate: bool = True,
) -> StageData:
    """Build a :class:`StageData` from the ``dataset`` config and one ``features`` layout config.

    Files named in ``features_cfg`` are relative to ``dataset.root``. Missing feature files are an
    error naming the video, or are skipped with a counted warning when ``dataset.skip_missing``.
    A training video without any annotated action is an error (it has no video-level label).
    With ``validate`` every feature file is read and checked (:func:`validate_stage_data`), so
    bad input fails here, before any training starts.
    """
    if dataset_cfg.get("root") is None:
        raise FustalError("dataset.root: not set (point it at a folder in the real layout)")
    root = Path(str(dataset_cfg["root"])).expanduser()
    if not root.is_dir():
        raise FustalError(f"dataset.root: folder not found: {root}")
    split_files = features_cfg.get("split_files")
    splits = (
        {subset: _resolve(root, path) for subset, path in split_files.items()}
        if split_files
        else None
    )
    class_list = classes if classes is not None else dataset_cfg.get("classes")
    annotations = load_annotations(
        _resolve(root, str(features_cfg["annotation_file"])),
        fmt=str(features_cfg.get("annotation_format", "auto")),
        split_files=splits,
        classes=list(class_list) if class_list is not None else None,
    )
    train_subset = str(features_cfg["train_subset"])
    test_subset = str(features_cfg["test_subset"])
    for subset in (train_subset, test_subset):
        annotations.subset(subset)
    data = StageData(
        annotations, FeatureSpec.from_config(features_cfg, root), train_subset, test_subset
    )
    skip_missing = bool(dataset_cfg.get("skip_missing", False))
    for subset in (train_subset, test_subset):
        missing = [v for v in annotations.subset(subset) if data.features.missing(v)]
        if missing and not skip_missing:
            first = data.features.missing(missing[0])[0]
            raise FustalError(
                f"video {missing[0].id} ({subset}): feature file not found: {first}"
                f" ({len(missing)} videos of '{subset}' lack features;"
                " dataset.skip_missing=true skips them)"
            )
        if missing:
            log.warning(
                "%s: skipping %d '%s' videos without feature files",
                annotations.source,
                len(missing),
                subset,
            )
            data.skipped[subset.lower()] = [v.id for v in missing]
    unlabelled = [v.id for v in data.train_videos() if v.num_segments == 0]
    if unlabelled:
        raise FustalError(
            f"{annotations.source}: video {unlabelled[0]} ({train_subset}): no annotated action"
            f" ({len(unlabelled)} training videos have none); weak supervision needs at least"
            " one video-level label per training video"
        )
    if validate:
        validate_stage_data(data)
    return data


def align_skipped(first: StageData, second: StageData) -> None:
    """Skip in both views every video that one of them skips (``dataset.skip_missing``), so that
    two feature layouts of one dataset train and test on the same videos."""
    for a, b in ((first, second), (second, first)):
        for subset_a, subset_b in (
            (a.train_subset, b.train_subset),
            (a.test_subset, b.test_subset),
        ):
            ids = set(a.skipped.get(subset_a.lower(), ())) - set(
                b.skipped.get(subset_b.lower(), ())
            )
            extra = [v.id for v in b.annotations.subset(subset_b) if v.id in ids]
            if extra:
                log.warning(
                    "%s: also skipping %d '%s' videos that lack %s features",
                    b.annotations.source,
                    len(extra),
                    subset_b,
                    a.features.layout,
                )
                b.skipped.setdefault(subset_b.lower(), []).extend(extra)
                b.summaries = None


def validate_stage_data(data: StageData) -> list[SubsetSummary]:
    """Read every feature file of the train and test subsets and check it (readable ``.npy``,
    rank 2, non-empty, finite, streams of equal length, one dimension for all videos).

    Raises :class:`FustalError` naming the first bad file or video; returns per-subset summaries
    (kept in ``data.summaries``: a second call reads nothing).
    """
    if data.summaries is not None:
        return data.summaries
    summaries = []
    dim: int | None = None
    first_file: Path | None = None
    for subset in (data.train_subset, data.test_subset):
        videos = data.videos(subset)
        lengths = np.zeros(len(videos), dtype=np.int64)
        for i, video in enumerate(videos):
            feats = data.features.load(video)
            if dim is None:
                dim, first_file = feats.shape[1], data.features.files(video)[0]
            elif feats.shape[1] != dim:
                raise FustalError(
                    f"{data.features.files(video)[0]}: feature dimension {feats.shape[1]} differs"
                    f" from {dim} of {first_file}"
                )
            lengths[i] = feats.shape[0]
        summaries.append(
            SubsetSummary(
                subset=subset,
                videos=len(videos),
                instances=int(sum(v.num_segments for v in videos)),
                classes_present=len({int(c) for v in videos for c in v.labels}),
                lengths=lengths,
                dim=int(dim or 0),
                skipped=len(data.skipped.get(subset.lower(), ())),
            )
        )
    data.summaries = summaries
    return summaries
