"""A dataset as one stage sees it: annotations of one file plus the features of one layout."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fustal.data.annotations import Annotations, Video, load_annotations
from fustal.data.features import FeatureSpec
from fustal.data.spec import DatasetConfig, ViewConfig
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
    overlapping layout), with the train/test subset names of that annotation file. ``heldout``:
    the training videos held out for validation (``validation=heldout|video_labels``): no stage
    trains on them, :meth:`val_videos` returns them."""

    annotations: Annotations
    features: FeatureSpec
    train_subset: str
    test_subset: str
    skipped: dict[str, list[str]] = field(default_factory=dict)
    summaries: list[SubsetSummary] | None = None
    heldout: frozenset[str] = frozenset()

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
        """The training videos, without the held-out ones."""
        return [v for v in self.videos(self.train_subset) if v.id not in self.heldout]

    def val_videos(self) -> list[Video]:
        """The held-out training videos (empty with ``validation=test``)."""
        return [v for v in self.videos(self.train_subset) if v.id in self.heldout]

    def feature_dim(self) -> int:
        """The feature dimension (validated equal for every video)."""
        if self.summaries:
            return self.summaries[0].dim
        return int(self.features.load(self.train_videos()[0]).shape[1])

    def test_videos(self) -> list[Video]:
        return self.videos(self.test_subset)


def _resolve_path(root: Path, path: str) -> Path:
    """``path``, relative ones taken from ``root``."""
    p = Path(path)
    return p if p.is_absolute() else root / p


def dataset_root(dataset: DatasetConfig) -> Path:
    """``dataset.root`` as an existing folder."""
    if dataset.root is None:
        raise FustalError("dataset.root: not set (point it at a folder in the real layout)")
    root = Path(dataset.root).expanduser()
    if not root.is_dir():
        raise FustalError(f"dataset.root: folder not found: {root}")
    return root


def _label(names: Sequence[str], layout: str, template: str) -> str:
    """``generator and student features (overlap, i3d_features/{video}.npy)``; unnamed views:
    ``features (...)``."""
    named = " and ".join(n for n in names if n)
    return f"{named + ' ' if named else ''}features ({layout}, {template})"


def missing_inputs(root: Path, views: Mapping[str, ViewConfig]) -> tuple[list[str], list[str]]:
    """What the ``features`` views ``{name: view}`` name under ``root`` that does not exist, each
    once: annotation files, split files and video tables; feature folders."""
    files: dict[Path, str] = {}
    folders: dict[tuple[Path, str, str], list[str]] = {}
    for name, view in views.items():
        annotation = _resolve_path(root, view.annotation_file)
        files.setdefault(annotation, "annotation file")
        for split in (view.split_files or {}).values():
            files.setdefault(_resolve_path(root, split), "split file")
        is_csv = view.annotation_format == "csv" or annotation.suffix == ".csv"
        if is_csv and view.video_table is not None:
            files.setdefault(_resolve_path(root, view.video_table), "video table")
        folder = FeatureSpec(root, view.layout, view.path).folder()
        folders.setdefault((folder, view.layout, view.path), []).append(name)
    missing_files = [f"{what} not found: {p}" for p, what in files.items() if not p.is_file()]
    missing_folders = [
        f"{_label(names, layout, template)}: folder not found: {folder}"
        for (folder, layout, template), names in folders.items()
        if not folder.is_dir()
    ]
    return missing_files, missing_folders


def check_inputs(dataset: DatasetConfig, views: Mapping[str, ViewConfig]) -> None:
    """Before any annotation is read: a missing annotation file, split file or video table is
    one error listing every input of every view that is missing (feature folders too)."""
    root = dataset_root(dataset)
    files, folders = missing_inputs(root, views)
    missing = files + folders
    if not files:
        return
    if len(missing) == 1:
        raise FustalError(f"dataset.root {root}: {missing[0]}")
    raise FustalError(
        f"dataset.root {root}: {len(missing)} inputs missing: {'; '.join(missing)}"
        " (docs/data.md lists what goes where)"
    )


def stage_view(
    dataset: DatasetConfig,
    view: ViewConfig,
    classes: Sequence[str] | None = None,
    where: str = "features",
) -> StageData:
    """The annotations and the feature spec of one view (the config node ``where``), before any
    feature file is looked at."""
    root = dataset_root(dataset)
    splits = {s: _resolve_path(root, p) for s, p in (view.split_files or {}).items()}
    class_list = classes if classes is not None else dataset.classes
    annotations = load_annotations(
        _resolve_path(root, view.annotation_file),
        fmt=view.annotation_format,
        split_files=splits or None,
        classes=list(class_list) if class_list is not None else None,
        video_table=None if view.video_table is None else _resolve_path(root, view.video_table),
    )
    for subset in (view.train_subset, view.test_subset):
        annotations.subset(subset)
    spec = FeatureSpec.from_config(view, root, where)
    return StageData(annotations, spec, view.train_subset, view.test_subset)


def missing_videos(data: StageData) -> dict[str, list[Video]]:
    """Videos of the train and test subsets without (all) their feature files, per subset."""
    subsets = dict.fromkeys((data.train_subset, data.test_subset))
    return {s: [v for v in data.annotations.subset(s) if data.features.missing(v)] for s in subsets}


def _describe_missing(
    names: Sequence[str], data: StageData, missing: Mapping[str, list[Video]]
) -> str:
    count = sum(len(videos) for videos in missing.values())
    total = sum(len(data.annotations.subset(s)) for s in missing)
    subset, videos = next((s, v) for s, v in missing.items() if v)
    path = data.features.missing(videos[0])[0]
    label = _label(names, data.features.layout, data.features.path)
    folder = data.features.folder()
    no_folder = "" if folder.is_dir() else f" (folder not found: {folder})"
    return (
        f"{label}: {count} of {total} videos lack them{no_folder}, first: video {videos[0].id}"
        f" ({subset}): feature file not found: {path}"
    )


def check_feature_files(views: Mapping[str, StageData], skip_missing: bool) -> None:
    """Videos without feature files: one error naming every view (layout) that lacks some, or,
    with ``skip_missing``, skipped (counted warning per subset). Views reading the same files
    (one layout for both stages) are reported once."""
    reports: dict[tuple, tuple[list[str], StageData, dict[str, list[Video]]]] = {}
    for name, data in views.items():
        missing = missing_videos(data)
        if any(missing.values()):
            spec = data.features
            key = (spec.root, spec.path, spec.streams, data.annotations.source)
            reports.setdefault(key, ([], data, missing))[0].append(name)
    if reports and not skip_missing:
        parts = [_describe_missing(n, d, m) for n, d, m in reports.values()]
        raise FustalError(
            f"{'; '.join(parts)} (dataset.skip_missing=true skips videos without features;"
            " docs/data.md names the feature sets)"
        )
    for names, _, missing in reports.values():
        for name in names:
            data = views[name]
            for subset, videos in missing.items():
                if videos:
                    log.warning(
                        "%s: skipping %d '%s' videos without feature files",
                        data.annotations.source,
                        len(videos),
                        subset,
                    )
                    data.skipped[subset.lower()] = [v.id for v in videos]


def check_videos_left(data: StageData, why: str) -> None:
    """Every subset keeps at least one video after skipping (``dataset.skip_missing``)."""
    for subset in (data.train_subset, data.test_subset):
        if not data.videos(subset):
            skipped = len(data.skipped.get(subset.lower(), ()))
            raise FustalError(
                f"dataset.skip_missing: no '{subset}' video of {data.annotations.source} is left"
                f" (all {skipped} skipped: {why}); nothing to train or test on"
            )


def check_training_labels(data: StageData) -> None:
    """Every training video has an annotated action (its video-level label)."""
    unlabelled = [v.id for v in data.train_videos() if v.num_segments == 0]
    if unlabelled:
        raise FustalError(
            f"{data.annotations.source}: video {unlabelled[0]} ({data.train_subset}): no annotated"
            f" action ({len(unlabelled)} training videos have none); weak supervision needs at"
            " least one video-level label per training video"
        )


def load_stage_data(
    dataset: DatasetConfig,
    view: ViewConfig,
    classes: Sequence[str] | None = None,
    validate: bool = True,
) -> StageData:
    """Build a :class:`StageData` from the ``dataset`` node and one ``features`` view.

    Files named in ``view`` are relative to ``dataset.root``; missing ones are one error
    listing them all. Missing feature files are an error naming the video, or are skipped with a
    counted warning when ``dataset.skip_missing`` (an error when no video of a subset is left).
    A training video without any annotated action is an error (it has no video-level label).
    With ``validate`` every feature file is read and checked (:func:`validate_stage_data`), so
    bad input fails here, before any training starts.
    """
    check_inputs(dataset, {"": view})
    data = stage_view(dataset, view, classes)
    check_feature_files({"": data}, dataset.skip_missing)
    check_videos_left(data, "their feature files are missing")
    check_training_labels(data)
    if validate:
        validate_stage_data(data)
    return data


def align_skipped(first: StageData, second: StageData) -> None:
    """Skip in both views every video that one of them skips (``dataset.skip_missing``), so that
    two feature layouts of one dataset train and test on the same videos."""
    for a, b in ((first, second), (second, first)):
        pairs = ((a.train_subset, b.train_subset), (a.test_subset, b.test_subset))
        for subset_a, subset_b in pairs:
            skipped_b = set(b.skipped.get(subset_b.lower(), ()))
            ids = set(a.skipped.get(subset_a.lower(), ())) - skipped_b
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
