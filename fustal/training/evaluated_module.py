"""The evaluation both stage modules share, through Lightning's ``validation_step`` (periodic
evaluation during training) and ``test_step``: detection mAP of their detections and, on held-out
training videos, video-level classification mAP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import pytorch_lightning as pl
import torch

from fustal.metrics.shape import VIDEO_MAP
from fustal.metrics.torchmetric import DetectionMAP, VideoMAP
from fustal.metrics.validation import best_class_scores

# what Lightning's validation loop scores (``validation.mode``): the test videos (the research
# code's practice, logged as ``<variant>/test/*``), or the held-out training videos with their
# segments (``heldout``: detection and video-level mAP) or their video labels only
# (``video_labels``: video-level mAP), logged as ``<variant>/val/*``
VALIDATION_MODES = ("test", "heldout", "video_labels")


class EvaluatedModule(pl.LightningModule):
    """A LightningModule evaluated by detection mAP: :meth:`evaluated_detections` gives each
    evaluated variant's detections of a batch (``{variant: [[K, 4] per video]}``, rows
    ``(class, score, start_s, end_s)``), :meth:`evaluated_video_scores` its video-level class
    scores (``[C]`` per video; by default each class's best detection score). Metrics accumulate
    per stage and variant and each epoch's end logs them, synced over the ranks:

    - ``test_step``: ``<variant>/test/<mAP key>``;
    - ``validation_step`` with ``validation="test"``: the same keys (the test videos, as in the
      research code); with ``"heldout"``: ``<variant>/val/<mAP key>`` and
      ``<variant>/val/video_map``; with ``"video_labels"``: ``<variant>/val/video_map`` only.

    Subclasses call :meth:`setup_evaluation` in ``__init__``."""

    maps: torch.nn.ModuleDict
    video_maps: torch.nn.ModuleDict
    validation: str

    @property
    def hp(self) -> Any:
        """The saved hyperparameters, read by attribute (``self.hparams`` untyped)."""
        return self.hparams

    def setup_evaluation(
        self,
        num_classes: int,
        tiou_thresholds: Sequence[float],
        variants: Sequence[str],
        validation: str = "test",
    ) -> None:
        if validation not in VALIDATION_MODES:
            raise ValueError(f"validation: expected one of {VALIDATION_MODES}, got {validation!r}")
        self.validation = validation
        stages = ("val", "test") if validation != "video_labels" else ("test",)
        self.maps = torch.nn.ModuleDict(
            {
                f"{stage}_{variant}": DetectionMAP(num_classes, tiou_thresholds)
                for stage in stages
                for variant in variants
            }
        )
        held_out = validation != "test"
        self.video_maps = torch.nn.ModuleDict(
            {variant: VideoMAP(num_classes) for variant in variants} if held_out else {}
        )

    def evaluated_detections(self, batch: dict) -> dict[str, list[np.ndarray]]:
        raise NotImplementedError

    def evaluated_video_scores(
        self, batch: dict, detections: dict[str, list[np.ndarray]] | None
    ) -> dict[str, list[np.ndarray]]:
        """Per variant, the video-level class scores ``[C]`` of each video of ``batch``: the
        highest score of its detections of each class (``detections``: those of
        :meth:`evaluated_detections`, None when not computed yet)."""
        if detections is None:
            detections = self.evaluated_detections(batch)
        num_classes = cast(VideoMAP, next(iter(self.video_maps.values()))).num_classes
        return {
            variant: [best_class_scores(r, num_classes) for r in rows]
            for variant, rows in detections.items()
        }

    def _evaluate(self, stage: str, batch: dict) -> None:
        detections = None
        if any(name.startswith(f"{stage}_") for name in self.maps):
            index = batch["index"].tolist()
            detections = self.evaluated_detections(batch)
            for variant, rows in detections.items():
                metric = cast(DetectionMAP, self.maps[f"{stage}_{variant}"])
                metric.update(index, rows, batch["gt_segments"], batch["gt_labels"])
        if stage == "val" and self.video_maps:
            for variant, scores in self.evaluated_video_scores(batch, detections).items():
                cast(VideoMAP, self.video_maps[variant]).update(scores, batch["gt_labels"])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate("val", batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate("test", batch)

    def evaluation_results(self, stage: str) -> dict[str, torch.Tensor]:
        """The metrics of the evaluation that just ended (``stage``: ``val`` or ``test``) by
        logged name, synced over the ranks; resets them for the next one."""
        section = "val" if stage == "val" and self.validation != "test" else "test"
        results = {}
        for name, metric in self.maps.items():
            prefix, variant = name.split("_", 1)
            if prefix != stage:
                continue
            metric = cast(DetectionMAP, metric)
            values = metric.compute()  # synced: the same on every rank
            results.update({f"{variant}/{section}/{k}": v for k, v in values.items()})
            metric.reset()
        if stage == "val":
            for variant, video_metric in self.video_maps.items():
                video_metric = cast(VideoMAP, video_metric)
                results[f"{variant}/val/{VIDEO_MAP}"] = video_metric.compute()
                video_metric.reset()
        return results

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.evaluation_results("val"), sync_dist=True)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.evaluation_results("test"), sync_dist=True)
