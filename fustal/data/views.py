"""The dataset as the pipeline sees it: both stage views of one dataset (e.g. the generator's
non-overlapping layout and the student's overlapping one, or one custom layout read by both), the
synthetic default generated on first use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, open_dict

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
from fustal.data.features import FeatureSpec
from fustal.errors import FustalError


def resolve_dataset_root(cfg: DictConfig) -> Path:
    """The dataset root; for the synthetic dataset (``dataset.root: null``) generate it on first
    use under ``paths.data_dir/synthetic/<hash>`` and store the path in ``cfg.dataset.root``."""
    if cfg.dataset.get("root") is None:
        if "synthetic" not in cfg.dataset:
            raise FustalError("dataset.root: not set (point it at a folder in the real layout)")
        from fustal.data.synthetic import SyntheticConfig, ensure_synthetic

        params = dict(cfg.dataset.synthetic)
        root = ensure_synthetic(SyntheticConfig(**params), Path(cfg.paths.data_dir) / "synthetic")
        with open_dict(cfg):
            cfg.dataset.root = str(root)
    return Path(str(cfg.dataset.root))


@dataclass
class PipelineData:
    """The dataset as both stages see it: the generator's view and the student's."""

    generator: StageData
    student: StageData

    @property
    def classes(self) -> list[str]:
        return self.student.classes


def record_sidecar(node: DictConfig, spec: FeatureSpec) -> None:
    """Write the timing and extractor a view took from its sidecar into its config node, so that
    the stages' cache keys and the run's config hold them."""
    if spec.sidecar is None:
        return
    values = {
        "fps": spec.fps,
        "window_frames": spec.window_frames,
        "stride_frames": spec.stride_frames,
        "extractor": spec.extractor,
    }
    with open_dict(node):
        for key, value in values.items():
            if node.get(key) != value:
                node[key] = value


def load_pipeline_data(cfg: DictConfig) -> PipelineData:
    """Load both stage views of the dataset (their class lists must agree) and check every file:
    all missing inputs and feature files of both views are one error; with
    ``dataset.skip_missing`` a video one view lacks is skipped by both, and no subset may end up
    empty."""
    resolve_dataset_root(cfg)
    nodes = {"generator": cfg.features.generator, "student": cfg.features.student}
    check_inputs(cfg.dataset, nodes)
    student = stage_view(cfg.dataset, nodes["student"], where="features.student")
    views = {
        "generator": stage_view(
            cfg.dataset, nodes["generator"], student.classes, "features.generator"
        ),
        "student": student,
    }
    check_feature_files(views, bool(cfg.dataset.get("skip_missing", False)))
    for name, data in views.items():
        check_videos_left(data, f"the {name}'s {data.features.layout} features are missing")
    align_skipped(views["generator"], views["student"])
    for data in views.values():
        check_videos_left(data, "each lacks the features of one stage or the other")
    for name, data in views.items():
        check_training_labels(data)
        validate_stage_data(data)
        record_sidecar(nodes[name], data.features)
    validation = cfg.validation
    if validation.mode != "test":
        heldout = heldout_videos(
            [v.id for v in student.train_videos()], validation.fraction, validation.seed
        )
        for data in views.values():
            data.heldout = heldout
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
