"""The dataset as the pipeline sees it: both stage views (the generator's non-overlapping
layout, the student's overlapping one) of one dataset, the synthetic default generated on first
use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, open_dict

from fustal.data.dataset import StageData, align_skipped, load_stage_data
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
    """The dataset as both stages see it: generator (non-overlapping) and student (overlapping)."""

    generator: StageData
    student: StageData

    @property
    def classes(self) -> list[str]:
        return self.student.classes


def load_pipeline_data(cfg: DictConfig) -> PipelineData:
    """Load both stage views of the dataset; their class lists must agree."""
    resolve_dataset_root(cfg)
    student = load_stage_data(cfg.dataset, cfg.features.student)
    generator = load_stage_data(cfg.dataset, cfg.features.generator, classes=student.classes)
    align_skipped(generator, student)
    return PipelineData(generator=generator, student=student)
