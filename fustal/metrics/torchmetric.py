"""Detection mAP and video-level classification mAP as torchmetrics metrics: detections,
scores and ground truth arrive batch by batch (in Lightning's ``validation_step`` /
``test_step``) and are gathered across DDP ranks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torchmetrics
from torch import Tensor

from fustal.metrics.detection import Detections, check_thresholds, detection_map
from fustal.metrics.validation import classes_map

_PRED = ("pred_video", "pred_label", "pred_score", "pred_start", "pred_end")
_GT = ("gt_video", "gt_label", "gt_start", "gt_end")


def _numpy(state: list[Tensor] | Tensor) -> np.ndarray:
    """A list state (or its synced concatenation) -> ``[N]`` float64 array."""
    if isinstance(state, list):
        if not state:
            return np.zeros(0, dtype=np.float64)
        state = torch.cat(state)
    return state.detach().cpu().to(torch.float64).numpy()


class _ColumnMetric(torchmetrics.Metric):
    """A metric over ``num_classes`` classes whose states ``names`` are 1-D float64 lists with
    ``dist_reduce_fx="cat"``, so each rank may see a different share of the videos (a rank with
    none syncs empty tensors)."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_classes: int, names: Sequence[str]) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        for name in names:
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self.set_dtype(torch.float64)

    def _append(self, names: Sequence[str], columns: Sequence[np.ndarray]) -> None:
        for name, column in zip(names, columns, strict=True):
            value = torch.as_tensor(np.asarray(column, np.float64).reshape(-1), device=self.device)
            getattr(self, name).append(value.to(self.dtype))


class DetectionMAP(_ColumnMetric):
    """ActivityNet detection mAP over the videos seen in an epoch.

    :meth:`update` takes, per video of a batch, its index (unique within the evaluated subset,
    e.g. the dataset index), its detections ``[K, 4]`` ``(class, score, start_s, end_s)`` and its
    ground truth (``segments [M, 2]`` seconds, ``labels [M]``), kept as the float64 list states
    of :class:`_ColumnMetric`. :meth:`compute` returns ``{"mAP@t": ..., "avg": ...}`` as float64
    scalar tensors.
    """

    def __init__(self, num_classes: int, tiou_thresholds: Sequence[float]) -> None:
        super().__init__(num_classes, (*_PRED, *_GT))
        self.tiou_thresholds = [float(t) for t in check_thresholds(tiou_thresholds)]

    def update(
        self,
        videos: Sequence[int],
        detections: Sequence[np.ndarray],
        gt_segments: Sequence[np.ndarray],
        gt_labels: Sequence[np.ndarray],
    ) -> None:
        """Add one batch: per video its index, detections and ground truth."""
        rows = [np.asarray(d, np.float64).reshape(-1, 4) for d in detections]
        segs = [np.asarray(s, np.float64).reshape(-1, 2) for s in gt_segments]
        pred = np.concatenate(rows) if rows else np.zeros((0, 4))
        truth = np.concatenate(segs) if segs else np.zeros((0, 2))
        labels = [np.asarray(lab, np.float64).reshape(-1) for lab in gt_labels]
        gt_label = np.concatenate(labels) if labels else np.zeros(0)
        self._append(_PRED, (np.repeat(videos, [len(r) for r in rows]), *pred.T))
        self._append(_GT, (np.repeat(videos, [len(s) for s in segs]), gt_label, *truth.T))

    def compute(self) -> dict[str, Tensor]:
        video, label, score, start, end = (_numpy(getattr(self, n)) for n in _PRED)
        pred = Detections(np.rint(video), np.rint(label), np.stack([start, end], axis=1), score)
        g_video, g_label, g_start, g_end = (_numpy(getattr(self, n)) for n in _GT)
        gt = Detections(np.rint(g_video), np.rint(g_label), np.stack([g_start, g_end], axis=1))
        result = detection_map(gt, pred, self.tiou_thresholds, self.num_classes)
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in result.items()}


class VideoMAP(_ColumnMetric):
    """Video-level classification mAP (:func:`fustal.metrics.validation.classes_map`) over the
    videos seen in an epoch: :meth:`update` takes, per video of a batch, its class scores ``[C]``
    and its ground-truth class indices (the classes of its segments; only which classes occur is
    used). The states are flat float64 lists, as in :class:`DetectionMAP`. :meth:`compute`
    returns the mAP as a float64 scalar tensor."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes, ("scores", "labels"))

    def update(self, scores: Sequence[np.ndarray], gt_labels: Sequence[np.ndarray]) -> None:
        """Add one batch: per video its class scores and the classes of its segments."""
        if not len(scores):
            return
        hot = np.zeros((len(gt_labels), self.num_classes))
        for i, classes in enumerate(gt_labels):
            hot[i, np.asarray(classes, np.int64).reshape(-1)] = 1.0
        flat_scores = np.stack([np.asarray(s, np.float64).reshape(-1) for s in scores]).reshape(-1)
        self._append(("scores", "labels"), (flat_scores, hot.reshape(-1)))

    def compute(self) -> Tensor:
        scores, labels = (
            _numpy(getattr(self, name)).reshape(-1, self.num_classes)
            for name in ("scores", "labels")
        )
        return torch.tensor(classes_map(scores, labels), dtype=torch.float64)
