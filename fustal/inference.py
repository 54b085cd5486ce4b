"""Inference shared by the stages, ``fustal.evaluate`` and ``fustal.predict``: per-video outputs
through ``Trainer.predict`` gathered in single-process order. (Loading saved checkpoints:
:mod:`fustal.checkpoints`; what a module stores about its features:
:mod:`fustal.data.module_arguments`.)"""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import DataLoader

from fustal.errors import Interrupted
from fustal.training.distributed import gather_in_order


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
