"""The dataset as the pipeline sees it: both stage views of one dataset (e.g. the generator's
non-overlapping layout and the student's overlapping one, or one custom layout read by both), the
synthetic default generated on first use."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from fustal.config import to_plain
from fustal.data.dataset import (
    StageData,
    align_skipped,
    check_feature_files,
    check_inputs,
    check_training_labels,
    check_videos_left,
    stage_view,
    validate_stage_data,
)
from fustal.data.spec import DatasetConfig, ViewConfig
from fustal.errors import FustalError


def dataset_config(cfg: DictConfig) -> DatasetConfig:
    """The ``dataset`` node with the root resolved: for the synthetic dataset
    (``dataset.root: null``) the folder it is generated into on first use,
    ``paths.data_dir/synthetic/<hash>`` (the config itself is not changed)."""
    dataset = DatasetConfig(**to_plain(cfg.dataset))
    if dataset.root is None and dataset.synthetic is not None:
        from fustal.data.synthetic import SyntheticConfig, ensure_synthetic

        synthetic = SyntheticConfig(**dataset.synthetic)
        dataset.root = str(ensure_synthetic(synthetic, Path(cfg.paths.data_dir) / "synthetic"))
    return dataset


def view_config(cfg: DictConfig, stage: str) -> ViewConfig:
    """The ``features`` node of ``stage`` (``generator`` or ``student``)."""
    return ViewConfig(**to_plain(cfg.features[stage]))


@dataclass
class PipelineData:
    """The dataset as both stages see it: the generator's view and the student's."""

    generator: StageData
    student: StageData

    @property
    def classes(self) -> list[str]:
        return self.student.classes


def load_pipeline_data(cfg: DictConfig) -> PipelineData:
    """Load both stage views of the dataset (their class lists must agree) and check every file:
    all missing inputs and feature files of both views are one error; with
    ``dataset.skip_missing`` a video one view lacks is skipped by both, and no subset may end up
    empty."""
    dataset = dataset_config(cfg)
    nodes = {stage: view_config(cfg, stage) for stage in ("generator", "student")}
    check_inputs(dataset, nodes)
    student = stage_view(dataset, nodes["student"], where="features.student")
    views = {
        "generator": stage_view(dataset, nodes["generator"], student.classes, "features.generator"),
        "student": student,
    }
    check_feature_files(views, dataset.skip_missing)
    for name, data in views.items():
        check_videos_left(data, f"the {name}'s {data.features.layout} features are missing")
    align_skipped(views["generator"], views["student"])
    for data in views.values():
        check_videos_left(data, "each lacks the features of one stage or the other")
    for data in views.values():
        check_training_labels(data)
        validate_stage_data(data)
    validation = cfg.validation
    if validation.mode != "test":
        heldout = heldout_videos(
            [v.id for v in student.train_videos()], validation.fraction, validation.seed
        )
        views = {name: replace(data, heldout=heldout) for name, data in views.items()}
    return PipelineData(**views)


def heldout_videos(video_ids: list[str], fraction: float, seed: int) -> frozenset[str]:
    """The ids of ``round(fraction * n)`` of the ``n`` training videos (at least one), drawn
    with ``seed`` from the sorted ids, so the split depends on the dataset and the seed only
    (not on the run's seed or the file order); at least one video must be left to train on."""
    count = max(1, round(fraction * len(video_ids)))
    if count >= len(video_ids):
        raise FustalError(
            f"validation.fraction={fraction}: holds out {count} of the {len(video_ids)} training"
            " videos and leaves none to train on"
        )
    ordered = sorted(video_ids)
    picked = np.random.default_rng(seed).choice(len(ordered), size=count, replace=False)
    return frozenset(ordered[i] for i in picked)
