"""Deterministic, resumable, rank-aware sampling.

Randomness in fustal's training data is a pure function of ``(seed, epoch, index)``, so a run
resumed from an epoch-boundary checkpoint replays exactly what an uninterrupted run would, and
every DDP rank agrees on the permutation before taking its shard.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from fustal.errors import FustalError


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


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


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random generator of one training item of one epoch."""
    return np.random.default_rng((seed, epoch, index))


class EpochSampler(Sampler[int]):
    """Yields dataset keys ``epoch * n + index``: shuffled by ``(seed, epoch)`` when training,
    in order otherwise; each rank takes every ``world``-th key (training pads the permutation so
    that ranks get equal counts; evaluation does not, so nothing is duplicated)."""

    def __init__(self, num_items: int, seed: int = 0, shuffle: bool = True) -> None:
        self.num_items = num_items
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

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
        return iter((self.epoch * self.num_items + order[rank::size]).tolist())

    def __len__(self) -> int:
        rank, size = world()
        if self.shuffle:
            return -(-self.num_items // size)
        return len(range(rank, self.num_items, size))


def split_key(key: int, num_items: int) -> tuple[int, int]:
    """Dataset key -> (epoch, index)."""
    return divmod(int(key), num_items)
