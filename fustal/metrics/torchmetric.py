"""Detection mAP as a torchmetrics ``Metric`` that gathers detections across DDP ranks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torchmetrics
from torch import Tensor

from fustal.metrics.detection import Detections, check_ground_truth, check_thresholds, detection_map

_STATES = ("video", "label", "score", "start", "end")


def _state_to_numpy(state: list[Tensor] | Tensor) -> np.ndarray:
    """A list state (or its synced concatenation) -> ``[N]`` float64 array."""
    if isinstance(state, list):
        if not state:
            return np.zeros(0, dtype=np.float64)
        state = torch.cat(state)
    return state.detach().cpu().to(torch.float64).numpy()


class DetectionMAP(torchmetrics.Metric):
    """Accumulates detections of a validation/test epoch and computes detection mAP.

    Video indices refer to the video list of ``gt`` (e.g. from
    :func:`fustal.metrics.results.gt_to_detections`); -1 marks an unknown video. All states are
    1-D lists in the metric dtype (float64 by default, exact for indices) with
    ``dist_reduce_fx="cat"``, so a rank without detections syncs an empty tensor of that dtype.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, gt: Detections, num_classes: int, tiou_thresholds: Sequence[float]) -> None:
        super().__init__()
        check_ground_truth(gt, num_classes)
        self.gt = gt
        self.num_classes = num_classes
        self.tiou_thresholds = [float(t) for t in check_thresholds(tiou_thresholds)]
        for name in _STATES:
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self.set_dtype(torch.float64)

    def update(self, video: Tensor, label: Tensor, score: Tensor, segment: Tensor) -> None:
        """Add ``N`` detections: ``video [N]``, ``label [N]``, ``score [N]``, ``segment [N, 2]``."""
        segment = segment.detach().reshape(-1, 2)
        values = (video, label, score, segment[:, 0], segment[:, 1])
        for name, value in zip(_STATES, values, strict=True):
            getattr(self, name).append(value.detach().reshape(-1).to(self.dtype))

    def compute(self) -> dict[str, Tensor]:
        """``{tiou_key(t): mAP, ..., "avg": mean}`` as float64 scalar tensors."""
        video, label, score, start, end = (_state_to_numpy(getattr(self, n)) for n in _STATES)
        pred = Detections(
            video=np.rint(video).astype(np.int64),
            label=np.rint(label).astype(np.int64),
            segment=np.stack([start, end], axis=1),
            score=score,
        )
        result = detection_map(self.gt, pred, self.tiou_thresholds, self.num_classes)
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in result.items()}
