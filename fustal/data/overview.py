"""``stage=data``: validate every annotation and feature file of both stage views and print a
summary."""

from __future__ import annotations

import numpy as np
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from fustal.data.dataset import StageData, SubsetSummary, validate_stage_data
from fustal.data.views import load_pipeline_data

COLUMNS = ("subset", "videos", "instances", "classes", "T min", "T mean", "T max", "dim", "skipped")


def dataset_table(name: str, data: StageData, summaries: list[SubsetSummary]) -> Table:
    """A rich table: videos, instances, classes and feature statistics per subset."""
    table = Table(title=f"{name}: {data.annotations.source} + {data.features.layout} features")
    for col in COLUMNS:
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
        console.print(dataset_table(name, stage, summaries))
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
