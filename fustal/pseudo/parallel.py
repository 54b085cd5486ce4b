"""Proposals of many videos in worker processes.

:func:`~fustal.pseudo.proposals.cas_to_proposals` is numpy work of a few milliseconds per
video, done once per video at every evaluation and for every training video at pseudo-label
export. :class:`ProposalPool` runs it in a process pool while the caller keeps producing CAS
(the next batch's forward pass), so stage-1 evaluation is not bound to one core. The workers are
started with ``forkserver`` (safe next to torch's threads) and import numpy only.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Mapping
from concurrent.futures import Future, ProcessPoolExecutor
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
    """Collects ``cas_to_proposals`` results per video; computes them in ``workers`` processes
    (0: in the calling process, synchronously). Use as a context manager; :meth:`results`
    returns ``{video_id: [K, 4]}`` in submission order."""

    def __init__(self, params: Mapping[str, Any], workers: int = 0) -> None:
        self.params = dict(params)
        self.workers = workers
        self.executor: ProcessPoolExecutor | None = None
        self.pending: dict[str, Future | np.ndarray] = {}

    def __enter__(self) -> ProposalPool:
        if self.workers > 0:
            self.executor = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("forkserver")
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None

    def submit(
        self,
        video_id: str,
        cas: np.ndarray,
        actionness: np.ndarray,
        video_scores: np.ndarray,
        seconds_per_step: float,
    ) -> None:
        """Queue one video (``cas [T, C]``, ``actionness [T]``, ``video_scores [C]``)."""
        args = (cas, actionness, video_scores, seconds_per_step)
        if self.executor is None:
            self.pending[video_id] = cas_to_proposals(*args, **self.params)
        else:
            self.pending[video_id] = self.executor.submit(cas_to_proposals, *args, **self.params)

    def results(self) -> dict[str, np.ndarray]:
        """Every submitted video's ``[K, 4]`` proposals (waits for the workers); clears the
        queue."""
        out = {
            vid: item.result() if isinstance(item, Future) else item
            for vid, item in self.pending.items()
        }
        self.pending = {}
        return out
