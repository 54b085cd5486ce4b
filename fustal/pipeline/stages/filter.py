"""Stage 2: the filter of the pseudo labels, by default FuSTAL's prior-based one (METHOD.md
section 4); any function named by ``filter._target_`` (:mod:`fustal.pseudo.filters` says what it
receives and returns). Cheap and a pure function of its inputs, it runs in every run (not
cached) and writes ``pseudo_labels.filtered.json`` into the run dir."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from fustal.config import chosen_option, to_plain
from fustal.errors import FustalError
from fustal.metrics.quality import CHOICE_METRIC, filter_choice, rows_quality
from fustal.metrics.results import VideoDetections, count_rows, write_results
from fustal.metrics.shape import flatten, sections
from fustal.pipeline.stage import Stage
from fustal.pipeline.stages.outputs import FilterOutputs, GeneratorOutputs, PseudoLabelSource
from fustal.pipeline.stages.sources import pseudo_label_source
from fustal.pseudo.filters import RowFilter, filter_rows, prior_filter
from fustal.viz.pictures import RunPictures

PRIOR_FILTER = f"{prior_filter.__module__}.{prior_filter.__name__}"


class FilterStage(Stage[FilterOutputs]):
    name = "filter"
    cached = False

    @classmethod
    def inputs(cls, cfg: DictConfig) -> tuple[str, ...]:
        """The pseudo labels: of a file (``pseudo_labels=PATH``) or of the generator."""
        return (pseudo_label_source(cfg),)

    def key_parts(self) -> dict[str, Any]:
        """The filter function and its parameters: the ``filter`` group."""
        return to_plain(self.cfg.filter)

    def keep(self, params: dict[str, Any] | None = None) -> RowFilter:
        """The filter function with its parameters bound (``params``: the setting chosen for
        the parameters given as lists)."""
        return instantiate({**self.key_parts(), **(params or {})}, _partial_=True)

    def params(self) -> dict[str, Any]:
        """The filter function's parameters (``filter`` minus ``_target_``)."""
        return {k: v for k, v in self.key_parts().items() if not k.startswith("_")}

    def choices(self) -> dict[str, list[Any]]:
        """The parameters given as lists: the values to choose among on the held-out videos."""
        return {k: list(v) for k, v in self.params().items() if isinstance(v, list)}

    def described(self, params: dict[str, Any] | None = None) -> str:
        """The settings in words, for the log (``params``: the chosen ones)."""
        params, target = {**self.params(), **(params or {})}, self.cfg.filter._target_
        if target == PRIOR_FILTER:
            said = f"density >= {params['min_density']}, score > {params['min_score']}"
            best = params.get("keep_best", 0)
            return said + (f"; a video left without any keeps its best {best}" if best else "")
        return f"{target}({', '.join(f'{k}={v}' for k, v in params.items())})"

    def choose(self, held_out: VideoDetections) -> tuple[dict[str, Any], dict[str, Any]]:
        """The setting of :meth:`choices` whose kept held-out detections ``held_out`` (the
        generator's proposals on the held-out videos) match those videos' segments best
        (:func:`~fustal.metrics.quality.filter_choice`); returns it and the
        ``pseudo_labels.filter_choice`` metrics entry."""
        data, choices = self.ctx.data.student, self.choices()
        if not held_out:
            raise FustalError(
                f"filter.{next(iter(choices))}: a list of values is chosen on the held-out"
                " videos' detections; hold out videos with validation=heldout and let the"
                " generator label them (not pseudo_labels=PATH without them)"
            )
        grid = itertools.product(*choices.values())
        settings = [dict(zip(choices, values, strict=True)) for values in grid]
        filtered = [filter_rows(held_out, self.keep(setting))[0] for setting in settings]
        best, scores = filter_choice(filtered, data.val_videos(), data.num_classes)
        entry = {**settings[best], CHOICE_METRIC: scores[best], "settings": len(settings)}
        self.ctx.say(
            f"filter: chose {self.described(settings[best])} of {len(settings)} settings on the"
            f" {len(data.val_videos())} held-out videos ({CHOICE_METRIC} {scores[best]:.3f})"
        )
        return settings[best], {"pseudo_labels.filter_choice": entry}

    def compute(self, folder: Path) -> FilterOutputs:
        ctx, fcfg = self.ctx, self.cfg.filter
        (source,) = self.upstream
        upstream = self.input(source, PseudoLabelSource)
        pseudo_labels, where = upstream.pseudo_labels, upstream.source
        data = ctx.data.student
        train = data.train_videos()
        # what a list of filter settings is chosen on: the generator's detections on the held-out
        # videos, or a pseudo-label file's labels of them (left out of the training labels)
        held_out = {k: v for k, v in pseudo_labels.items() if k in data.heldout}
        if held_out:  # a pseudo-label file covering every training video
            ctx.say(
                f"filter: leaving out the pseudo labels of the {len(held_out)} held-out videos"
                f" ({where})"
            )
            pseudo_labels = {k: v for k, v in pseudo_labels.items() if k not in data.heldout}
        if isinstance(upstream, GeneratorOutputs):
            held_out = upstream.val
        unknown = sorted(set(pseudo_labels) - {v.id for v in train})
        if unknown:
            raise FustalError(
                f"{where}: {len(unknown)} videos are not training videos of the dataset"
                f" (first: {unknown[0]})"
            )
        if not count_rows(pseudo_labels):
            raise FustalError(f"{where}: no pseudo labels (nothing for the student to learn)")
        chosen: dict[str, Any] = {}
        choice_metrics: dict[str, Any] = {}
        try:
            if self.choices():
                chosen, choice_metrics = self.choose(held_out)
            keep = self.keep(chosen)
            filtered, stats = filter_rows(pseudo_labels, keep, str(fcfg._target_))
        except ValueError as err:
            raise FustalError(str(err)) from None
        if not stats["after"]:
            params = {**self.params(), **chosen}
            settings = ", ".join(f"{k}={v}" for k, v in params.items())
            thresholds = sorted((k for k in params if k != "keep_best"), reverse=True)
            knobs = " or ".join(f"filter.{k}" for k in thresholds)
            option = chosen_option("filter")
            which = f"filter={option}" if option else f"filter ({fcfg._target_})"
            raise FustalError(
                f"{which}: no pseudo label passes ({settings}) out of {stats['before']};"
                f" {'lower ' + knobs + ', ' if knobs else ''}"
                f"{'raise filter.keep_best, ' if 'keep_best' in params else ''}or use filter=none"
            )
        ctx.say(
            f"stage 2/3 filter: {stats['before']} -> {stats['after']} pseudo labels kept"
            f" ({self.described(chosen)})"
        )
        tiou = list(self.cfg.dataset.tiou_thresholds)
        raw = sections(upstream.metrics).get("pseudo_labels.raw") or rows_quality(
            pseudo_labels, train, data.num_classes, tiou
        )
        metrics = {
            "pseudo_labels.raw": raw,
            "pseudo_labels.filtered": rows_quality(filtered, train, data.num_classes, tiou),
            "pseudo_labels.filter_stats": stats,
            **choice_metrics,
        }
        return FilterOutputs(filtered, stats, flatten(metrics))

    def show(self, outputs: FilterOutputs, shown: RunPictures) -> None:
        shown.pseudo["filtered"] = shown.train_tracks["pseudo labels (filtered)"] = outputs.filtered

    def save(self, outputs: FilterOutputs, folder: Path) -> None:
        classes = self.ctx.data.student.classes
        write_results(folder / "pseudo_labels.filtered.json", outputs.filtered, classes)
