"""Stage 2: the prior-based filter of the pseudo labels (METHOD.md section 4). Cheap and a pure
function of its inputs, it runs in every run (not cached) and writes
``pseudo_labels.filtered.json`` into the run dir."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from fustal.errors import FustalError
from fustal.io import write_json
from fustal.metrics.quality import rows_quality
from fustal.metrics.results import VideoDetections, count_rows, rows_to_results
from fustal.pipeline.stage import Stage
from fustal.pipeline.stages.sources import PseudoLabelFile
from fustal.pseudo.filters import filter_rows


@dataclass
class FilterOutputs:
    """The filtered pseudo labels, the filter's counts and the quality metrics."""

    filtered: VideoDetections
    stats: dict[str, int]
    metrics: dict[str, Any]


class FilterStage(Stage[FilterOutputs]):
    name = "filter"
    cached = False

    @classmethod
    def inputs(cls, cfg: DictConfig) -> tuple[str, ...]:
        """The pseudo labels: of a file (``pseudo_labels=PATH``) or of the generator."""
        return (PseudoLabelFile.name,) if cfg.pseudo_labels else ("generator",)

    def key_parts(self) -> dict[str, Any]:
        fcfg = self.cfg.filter
        return {"min_density": fcfg.min_density, "min_score": fcfg.min_score}

    def compute(self, folder: Path) -> FilterOutputs:
        ctx, fcfg = self.ctx, self.cfg.filter
        (source,) = self.upstream
        upstream = self.input(source)
        pseudo_labels: VideoDetections = upstream.pseudo_labels
        where = getattr(upstream, "source", source)
        data = ctx.data.student
        train = data.train_videos()
        unknown = sorted(set(pseudo_labels) - {v.id for v in train})
        if unknown:
            raise FustalError(
                f"{where}: {len(unknown)} videos are not training videos of the dataset"
                f" (first: {unknown[0]})"
            )
        if not count_rows(pseudo_labels):
            raise FustalError(f"{where}: no pseudo labels (nothing for the student to learn)")
        filtered, stats = filter_rows(pseudo_labels, fcfg.min_density, fcfg.min_score)
        if not stats["after"]:
            raise FustalError(
                f"filter={fcfg.name}: no pseudo label passes"
                f" (min_density={fcfg.min_density}, min_score={fcfg.min_score})"
                f" out of {stats['before']}; lower filter.min_score or filter.min_density,"
                " or use filter=none"
            )
        ctx.say(
            f"stage 2/3 filter: {stats['before']} -> {stats['after']} pseudo labels kept"
            f" (density >= {fcfg.min_density}, score > {fcfg.min_score})"
        )
        tiou = list(self.cfg.dataset.tiou_thresholds)
        raw = upstream.metrics.get("pseudo_labels.raw") or rows_quality(
            pseudo_labels, train, data.num_classes, tiou
        )
        metrics = {
            "pseudo_labels.raw": raw,
            "pseudo_labels.filtered": rows_quality(filtered, train, data.num_classes, tiou),
            "pseudo_labels.filter_stats": stats,
        }
        return FilterOutputs(filtered, stats, metrics)

    def save(self, outputs: FilterOutputs, folder: Path) -> None:
        results = rows_to_results(outputs.filtered, self.ctx.data.student.classes)
        write_json(folder / "pseudo_labels.filtered.json", results)
