"""Process-group helpers: rank queries and the few collectives fustal needs outside Lightning
(cache decisions, gathering per-video outputs in single-process order). Every function is the
identity, or trivially true, without a process group."""

from __future__ import annotations

import logging
import os
from itertools import zip_longest
from pathlib import Path
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


def separate_rank_log() -> None:
    """On a rank other than 0 started by an external launcher (``torchrun``, SLURM), move the
    log file handlers from ``<name>.log`` to ``<name>_rank<r>.log``, so that every rank keeps its
    own log and rank 0's ``train.log`` reads as a single-process one. (Ranks that fustal starts
    are already named so.)"""
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0)))
    if rank == 0:
        return
    root = logging.getLogger()
    for handler in list(root.handlers):
        if not isinstance(handler, logging.FileHandler):
            continue
        path = Path(handler.baseFilename)
        if path.stem.endswith(f"_rank{rank}"):
            continue
        moved = logging.FileHandler(path.with_name(f"{path.stem}_rank{rank}{path.suffix}"))
        moved.setLevel(handler.level)
        moved.setFormatter(handler.formatter)
        root.removeHandler(handler)
        handler.close()
        root.addHandler(moved)


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
