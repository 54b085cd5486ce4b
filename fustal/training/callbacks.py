"""Lightning callbacks of every fustal Trainer (besides Lightning's own, see ``conf/callbacks``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl

from fustal.training.distributed import world


class BatchReseed(pl.Callback):
    """Seed the global RNGs (torch, numpy, random) from ``(seed, epoch, batch, rank)`` before
    every training batch. Dropout and snippet mining are then a function of the position in
    training, whatever else drew random numbers in between (a DataLoader draws its base seed when
    its iterator is created, which Lightning does at a different point of a resumed epoch than of
    an uninterrupted one), so a resumed run replays exactly what an uninterrupted one does."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        rank, _ = world()
        entropy = [self.seed % 2**32, trainer.current_epoch, batch_idx, rank]
        seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
        pl.seed_everything(seed, verbose=False)
