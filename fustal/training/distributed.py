"""Process-group helpers: rank queries and the few collectives fustal needs outside Lightning
(cache decisions, gathering per-video outputs in single-process order). Every function is the
identity, or trivially true, without a process group."""

from __future__ import annotations

import os
from itertools import zip_longest
from typing import Any, TypeVar

import torch.distributed as dist

T = TypeVar("T")


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_distributed() -> bool:
    """True inside a process group of more than one process."""
    return world()[1] > 1


def is_global_zero() -> bool:
    """Rank 0 of the (possibly not yet initialized) process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0))) == 0


def broadcast_from_zero(value: T) -> T:
    """Rank 0's ``value``, on every rank."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait until every rank gets here."""
    if is_distributed():
        dist.barrier()


def gather_in_order(local: dict[str, Any]) -> dict[str, Any]:
    """Every rank's per-video dict merged, on every rank, in a single process's order: the
    evaluation shards are rank-strided (:class:`~fustal.data.sampling.EpochSampler`), so the
    ranks' items interleave."""
    if not is_distributed():
        return local
    parts: list[list] = [[] for _ in range(dist.get_world_size())]
    dist.all_gather_object(parts, list(local.items()))
    return dict(item for row in zip_longest(*parts) for item in row if item is not None)
