"""Deterministic, resumable, rank-aware sampling.

Randomness in fustal's training data is a pure function of ``(seed, epoch, index)``, so a run
resumed from a checkpoint replays exactly what an uninterrupted run would, and every DDP rank
agrees on the permutation before taking its shard. A checkpoint taken inside an epoch records how
many batches of it were done (:class:`ResumePoint`, saved through the DataModule's
``state_dict``); the resumed epoch then skips them, so mid-epoch checkpoints resume exactly too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import Sampler

from fustal.errors import FustalError
from fustal.training.distributed import world


def rank_batch_size(batch_size: int, key: str) -> int:
    """This process's share of the global training batch ``batch_size`` (config ``key``): with
    the rank-strided shards of :class:`EpochSampler`, a DDP run then steps through the same
    batches as one process."""
    _, size = world()
    if batch_size % size:
        raise FustalError(
            f"{key}={batch_size} is the global batch size: it must be a multiple of the"
            f" {size} DDP processes"
        )
    return batch_size // size


def eval_sampler(subset: str, num_items: int, seed: int) -> EpochSampler:
    """The in-order sampler of an evaluation loader over ``num_items`` videos of ``subset``;
    under DDP every process needs one video at least (Lightning refuses an empty loader)."""
    _, size = world()
    if num_items < size:
        fix = "raise validation.fraction" if subset == "val" else "use fewer processes"
        raise FustalError(
            f"the {num_items} {'held-out' if subset == 'val' else subset} videos are fewer than"
            f" the {size} DDP processes (each scores one at least): {fix}"
        )
    return EpochSampler(num_items, seed, shuffle=False)


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random generator of one training item of one epoch."""
    return np.random.default_rng((seed, epoch, index))


@dataclass
class ResumePoint:
    """Where a restored run stopped inside an epoch: ``batches`` training batches of ``epoch``
    were done (``epoch`` -1: nothing to skip). One instance is shared by a DataModule and its
    training sampler; the sampler consumes it once."""

    epoch: int = -1
    batches: int = 0

    def state(self, trainer: pl.Trainer | None) -> dict[str, int]:
        """The position of ``trainer``'s fit loop, as saved into a checkpoint: the current
        epoch and the batches of it processed so far."""
        if trainer is None:
            return {"epoch": -1, "batches": 0}
        # typed as a ready/completed tracker; the training batch loop's holds ``processed``
        progress: Any = trainer.fit_loop.epoch_loop.batch_progress.current
        return {"epoch": int(trainer.current_epoch), "batches": int(progress.processed)}

    def load(self, state: dict[str, Any]) -> None:
        self.epoch, self.batches = int(state.get("epoch", -1)), int(state.get("batches", 0))


@dataclass(eq=False)
class EpochSampler(Sampler[int]):
    """Yields dataset keys ``epoch * n + index``: shuffled by ``(seed, epoch)`` when training,
    in order otherwise; each rank takes every ``world``-th key (training pads the permutation so
    that ranks get equal counts; evaluation does not, so nothing is duplicated). With a
    ``resume`` point for the current epoch, the first ``resume.batches * batch_size`` keys of
    this rank are skipped (once)."""

    num_items: int
    seed: int = 0
    shuffle: bool = True
    resume: ResumePoint | None = None
    batch_size: int = 1
    epoch: int = field(default=0, init=False)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_items)
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(self.num_items, generator=generator).numpy()

    def __iter__(self) -> Iterator[int]:
        rank, size = world()
        order = self._order()
        if self.shuffle and size > 1 and order.size % size:
            order = np.concatenate([order, order[: size - order.size % size]])
        keys = self.epoch * self.num_items + order[rank::size]
        if self.resume is not None and self.resume.epoch == self.epoch:
            keys = keys[self.resume.batches * self.batch_size :]
            self.resume.epoch = -1
        return iter(keys.tolist())

    def __len__(self) -> int:
        rank, size = world()
        if self.shuffle:
            return -(-self.num_items // size)
        return len(range(rank, self.num_items, size))


def split_key(key: int, num_items: int) -> tuple[int, int]:
    """Dataset key -> (epoch, index)."""
    return divmod(int(key), num_items)
