"""Lightning callbacks of every fustal Trainer (besides Lightning's own, see ``conf/callbacks``)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from fustal.training.distributed import world


class BatchReseed(pl.Callback):
    """Seed the global RNGs (torch, numpy, random) from ``(seed, epoch, batch, rank)`` before
    every training batch. Dropout and snippet mining are then a function of the position in
    training, whatever else drew random numbers in between (a DataLoader draws its base seed when
    its iterator is created, which Lightning does at a different point of a resumed epoch than of
    an uninterrupted one), so a resumed run replays exactly what an uninterrupted one does.

    On the CPU only torch's CPU generator is seeded: ``torch.manual_seed`` also queues a seed for
    every accelerator not yet initialized, formatting a stack trace each time (milliseconds per
    step, more than a small model's step)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        rank, _ = world()
        entropy = [self.seed % 2**32, trainer.current_epoch, batch_idx, rank]
        seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
        random.seed(seed)
        np.random.seed(seed)  # noqa: NPY002 (the global RNG, as seed_everything seeds it)
        if pl_module.device.type == "cpu":
            torch.default_generator.manual_seed(seed)
        else:
            torch.manual_seed(seed)
