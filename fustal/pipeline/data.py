"""Dataset resolution for the pipeline (synthetic generation, both stage views) and the
``stage=data`` validation summary."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, open_dict
from rich.console import Console
from rich.table import Table

from fustal.data.dataset import (
    StageData,
    SubsetSummary,
    align_skipped,
    load_stage_data,
    validate_stage_data,
)
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


def summary_table(name: str, data: StageData, summaries: list[SubsetSummary]) -> Table:
    """A rich table: videos, instances, classes and feature statistics per subset."""
    table = Table(title=f"{name}: {data.annotations.source} + {data.features.layout} features")
    for col in (
        "subset",
        "videos",
        "instances",
        "classes",
        "T min",
        "T mean",
        "T max",
        "dim",
        "skipped",
    ):
        table.add_column(col, justify="left" if col == "subset" else "right")
    for s in summaries:
        lengths = s.lengths if s.lengths.size else np.zeros(1, dtype=np.int64)
        table.add_row(
            s.subset,
            str(s.videos),
            str(s.instances),
            f"{s.classes_present}/{data.num_classes}",
            str(int(lengths.min())),
            f"{lengths.mean():.1f}",
            str(int(lengths.max())),
            str(s.dim),
            str(s.skipped),
        )
    return table


def run_data_stage(cfg: DictConfig, console: Console) -> dict:
    """Validate every annotation and feature file of both stages and print a summary."""
    data = load_pipeline_data(cfg)
    out = {}
    for name, stage in (("generator", data.generator), ("student", data.student)):
        summaries = validate_stage_data(stage)
        console.print(summary_table(name, stage, summaries))
        out[name] = {
            s.subset: {
                "videos": s.videos,
                "instances": s.instances,
                "feature_dim": s.dim,
                "mean_length": float(s.lengths.mean()) if s.lengths.size else 0.0,
            }
            for s in summaries
        }
    if data.student.annotations.clipped_segments:
        console.print(
            f"[yellow]clipped {data.student.annotations.clipped_segments} segments that end after"
            " their video's duration[/yellow]"
        )
    console.print(f"classes ({len(data.classes)}): {', '.join(data.classes)}")
    return out
