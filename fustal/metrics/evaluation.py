"""The evaluation both stage modules share: detection mAP of their test-time detections, through
Lightning's ``validation_step`` (the periodic test mAP during training) and ``test_step``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
import pytorch_lightning as pl
import torch

from fustal.metrics.torchmetric import DetectionMAP

STAGES = ("val", "test")


class EvaluatedModule(pl.LightningModule):
    """A LightningModule whose evaluation is detection mAP: :meth:`evaluated_detections` gives
    each evaluated variant's detections of a batch (``{variant: [[K, 4] per video]}``, rows
    ``(class, score, start_s, end_s)``); one :class:`DetectionMAP` per stage and variant
    accumulates them, and each epoch's end logs ``<variant>/test/<mAP key>`` (``test``: the
    research code evaluates on the test videos), synced over the ranks. Subclasses call
    :meth:`setup_evaluation` in ``__init__``."""

    maps: torch.nn.ModuleDict

    def setup_evaluation(
        self, num_classes: int, tiou_thresholds: Sequence[float], variants: Sequence[str]
    ) -> None:
        self.maps = torch.nn.ModuleDict(
            {
                f"{stage}_{variant}": DetectionMAP(num_classes, tiou_thresholds)
                for stage in STAGES
                for variant in variants
            }
        )

    def evaluated_detections(self, batch: dict) -> dict[str, list[np.ndarray]]:
        raise NotImplementedError

    def _evaluate(self, stage: str, batch: dict) -> None:
        index = batch["index"].tolist()
        for variant, rows in self.evaluated_detections(batch).items():
            metric = cast(DetectionMAP, self.maps[f"{stage}_{variant}"])
            metric.update(index, rows, batch["gt_segments"], batch["gt_labels"])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate("val", batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate("test", batch)

    def _log_maps(self, stage: str) -> None:
        for name, metric in self.maps.items():
            prefix, variant = name.split("_", 1)
            if prefix != stage:
                continue
            metric = cast(DetectionMAP, metric)
            values = metric.compute()  # synced: the same on every rank
            self.log_dict({f"{variant}/test/{k}": v for k, v in values.items()}, sync_dist=True)
            metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_maps("val")

    def on_test_epoch_end(self) -> None:
        self._log_maps("test")
