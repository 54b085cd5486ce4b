"""Proposals of many videos in worker processes.

:func:`~fustal.pseudo.proposals.cas_to_proposals` is numpy work of a few milliseconds per
video, done once per video at every evaluation and for every training video at pseudo-label
export. :class:`ProposalPool` runs it in a process pool (a batch's videos in parallel), so
stage-1 evaluation is not bound to one core. The workers are started with ``forkserver`` (safe
next to torch's threads) and import numpy only.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from fustal.errors import FustalError
from fustal.pseudo.proposals import cas_to_proposals

# "auto" uses worker processes only from this many videos on (below, starting them costs more
# than it saves)
AUTO_MIN_VIDEOS = 64
AUTO_MAX_WORKERS = 8


def resolve_workers(workers: int | str, num_videos: int) -> int:
    """Worker processes for ``num_videos`` videos: an int as given (0: in this process), or
    ``"auto"``: none below :data:`AUTO_MIN_VIDEOS` videos, else one per CPU this process may use
    (its share when several DDP processes run on the machine), at most
    :data:`AUTO_MAX_WORKERS`."""
    if workers == "auto":
        if num_videos < AUTO_MIN_VIDEOS:
            return 0
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        local = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        return max(1, min(AUTO_MAX_WORKERS, (cpus or 1) // max(local, 1)))
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise FustalError(f"proposal_workers: expected 'auto' or an integer >= 0, got {workers!r}")
    return workers


class ProposalPool:
    """Runs ``cas_to_proposals`` with fixed ``params`` over many videos, in ``workers``
    processes (0: in the calling process). Use as a context manager, or call :meth:`close`."""

    def __init__(self, params: Mapping[str, Any], workers: int = 0) -> None:
        self.params = dict(params)
        self.executor: ProcessPoolExecutor | None = None
        if workers > 0:
            self.executor = ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("forkserver")
            )

    def __enter__(self) -> ProposalPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None

    def map(
        self, videos: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, float]]
    ) -> list[np.ndarray]:
        """Proposals ``[K, 4]`` of each ``(cas [T, C], actionness [T], video_scores [C],
        seconds_per_step)``, in order."""
        if self.executor is None:
            return [cas_to_proposals(*video, **self.params) for video in videos]
        futures = [self.executor.submit(cas_to_proposals, *v, **self.params) for v in videos]
        return [future.result() for future in futures]
