"""Inference shared by the stages, ``fustal.evaluate`` and ``fustal.predict``: the feature timing
stored in checkpoints, and per-video outputs through ``Trainer.predict`` gathered in
single-process order. (Loading saved checkpoints: :mod:`fustal.checkpoints`.)"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import DataLoader

from fustal.data.dataset import StageData
from fustal.errors import Interrupted
from fustal.training.distributed import gather_in_order


def feature_timing(data: StageData) -> dict[str, Any]:
    """What converts a stage's feature steps to seconds, and what made its features: the layout,
    window and stride in frames and the fps (``features.fps``, else the most common fps of the
    dataset's videos; ``fps_varies`` says whether their fps differ), ``steps`` (resized layout:
    the length every video was resized to, None when they differ) and ``extractor`` (the
    features' record, e.g. from their ``features.json``; None: unknown)."""
    spec = data.features
    counts = Counter(v.fps for v in data.annotations.videos.values() if v.fps is not None)
    fps = spec.fps if spec.fps is not None else (counts.most_common(1)[0][0] if counts else None)
    lengths = {int(t) for s in data.summaries or [] for t in s.lengths}
    return {
        "layout": spec.layout,
        "window_frames": spec.window_frames,
        "stride_frames": spec.stride_frames,
        "fps": None if fps is None else float(fps),
        "fps_varies": spec.fps is None and len(counts) > 1,
        "steps": lengths.pop() if spec.layout == "resized" and len(lengths) == 1 else None,
        "extractor": spec.extractor,
    }


# what every stage module receives from the data (:func:`module_arguments`), besides its config
MODULE_ARGUMENTS = ("feature_dim", "num_classes", "tiou_thresholds", "classes", "feature_timing")


def module_arguments(data: StageData, tiou_thresholds: Sequence[float]) -> dict[str, Any]:
    """A stage module's arguments that come from the data (:data:`MODULE_ARGUMENTS`): feature
    dimension, classes, the evaluation thresholds and the feature timing (metadata for
    ``fustal.predict``)."""
    values = (
        data.feature_dim(),
        data.num_classes,
        list(tiou_thresholds),
        data.classes,
        feature_timing(data),
    )
    return dict(zip(MODULE_ARGUMENTS, values, strict=True))


def predict_videos(
    trainer: pl.Trainer, module: pl.LightningModule, loader: DataLoader
) -> dict[str, dict[str, np.ndarray]]:
    """Detections of every video of ``loader`` through ``trainer.predict``: ``{variant:
    {video_id: [K, 4] rows (class, score, start_s, end_s)}}`` with the variants the module's
    ``predict_step`` returns (``generator``; ``student`` and ``student_ema``). Under DDP each rank
    predicts its shard and every rank gets all videos, in single-process order."""
    try:
        batches = trainer.predict(module, dataloaders=loader, return_predictions=True) or []
    except SystemExit:  # Lightning's answer to Ctrl-C (exit 1) and SIGTERM (exit 0)
        raise Interrupted("stopped while predicting; nothing was written") from None
    if trainer.interrupted:
        raise Interrupted("stopped while predicting; nothing was written")
    local: dict[str, dict[str, np.ndarray]] = {}
    for batch in batches:
        assert isinstance(batch, dict)
        for key, values in batch.items():
            if key != "video_id":
                local.setdefault(key, {}).update(zip(batch["video_id"], values, strict=True))
    return {key: gather_in_order(rows) for key, rows in local.items()}
