"""Stage 2: the prior-based filter of the pseudo labels (METHOD.md section 4). Cheap and a pure
function of its inputs, it runs in every run (not cached) and writes
``pseudo_labels.filtered.json`` into the run dir."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fustal.errors import FustalError
from fustal.io import write_json
from fustal.metrics.quality import rows_quality
from fustal.metrics.results import VideoDetections, count_rows, rows_to_results
from fustal.pipeline.stage import RunContext, Stage
from fustal.pseudo.filters import filter_rows
from fustal.training.distributed import is_global_zero


@dataclass
class FilterOutputs:
    """The filtered pseudo labels, the filter's counts and the quality metrics."""

    filtered: VideoDetections
    stats: dict[str, int]
    metrics: dict[str, Any]


class FilterStage(Stage[FilterOutputs]):
    name = "filter"
    artifacts = ("pseudo_labels.filtered.json",)
    exported = ()
    cached = False

    def __init__(
        self,
        ctx: RunContext,
        pseudo_labels: VideoDetections,
        upstream: str,
        source: str,
        raw_quality: dict[str, Any] | None = None,
    ) -> None:
        """``pseudo_labels`` from ``source`` (the generator stage or a file), identified by
        ``upstream``; ``raw_quality``: their quality when the generator already scored them."""
        super().__init__(ctx)
        self.pseudo_labels = pseudo_labels
        self.upstream = upstream
        self.source = source
        self.raw_quality = raw_quality

    def key_parts(self) -> dict[str, Any]:
        fcfg = self.cfg.filter
        return {"min_density": fcfg.min_density, "min_score": fcfg.min_score, "up": self.upstream}

    def run(self, folder: Path) -> FilterOutputs:
        ctx, fcfg = self.ctx, self.cfg.filter
        data = ctx.data.student
        train = data.train_videos()
        unknown = sorted(set(self.pseudo_labels) - {v.id for v in train})
        if unknown:
            raise FustalError(
                f"{self.source}: {len(unknown)} videos are not training videos of the dataset"
                f" (first: {unknown[0]})"
            )
        if not count_rows(self.pseudo_labels):
            raise FustalError(f"{self.source}: no pseudo labels (nothing for the student to learn)")
        filtered, stats = filter_rows(self.pseudo_labels, fcfg.min_density, fcfg.min_score)
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
        raw = self.raw_quality or rows_quality(self.pseudo_labels, train, data.num_classes, tiou)
        metrics = {
            "pseudo_labels.raw": raw,
            "pseudo_labels.filtered": rows_quality(filtered, train, data.num_classes, tiou),
            "pseudo_labels.filter_stats": stats,
        }
        if is_global_zero():
            results = rows_to_results(filtered, data.classes)
            write_json(folder / "pseudo_labels.filtered.json", results)
        return FilterOutputs(filtered, stats, metrics)
