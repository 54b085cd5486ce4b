"""Video-level data for the stage-1 generator: non-overlapping features resampled to a fixed
number of steps, multi-hot video labels, the original length for time conversion, and (for
evaluation) each video's ground truth."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fustal.data.annotations import Video
from fustal.data.datamodule import ResumableDataModule
from fustal.data.dataset import StageData
from fustal.data.features import resample_indices
from fustal.data.sampling import item_rng, split_key


@dataclass(eq=False, repr=False)  # a dataclass repr would list every video
class GeneratorVideos(Dataset):
    """One item per video: ``features [N, D]`` (N = num_segments when training, else the uniform
    resampling), ``labels [C]``, ``length`` (original T), ``seconds_per_step`` (of the returned
    steps), ``index`` (position in ``videos``), ``video_id`` and the ground truth
    ``gt_segments [M, 2]`` (seconds) and ``gt_labels [M]``."""

    data: StageData
    videos: Sequence[Video]
    num_segments: int
    train: bool
    seed: int = 0

    def __post_init__(self) -> None:
        self.videos = list(self.videos)

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, key: int) -> dict[str, Any]:
        epoch, index = split_key(key, len(self.videos))
        video = self.videos[index]
        feats = self.data.features.load(video)
        length = feats.shape[0]
        rng = item_rng(self.seed, epoch, index) if self.train else None
        idx = resample_indices(length, self.num_segments, rng)
        timing = self.data.features.timing(video, length)
        return {
            "features": torch.from_numpy(np.ascontiguousarray(feats[idx])),
            "labels": torch.from_numpy(video.video_label(self.data.num_classes)),
            "length": length,
            "seconds_per_step": timing.stride_s * length / len(idx),
            "index": index,
            "video_id": video.id,
            "gt_segments": video.segments,
            "gt_labels": video.labels,
        }


def collate_videos(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack items, zero-padding ``features`` to the longest; ``valid [B]`` holds each video's
    number of returned steps (pass it to the generator so video scores ignore the padding).
    Ground truth stays a list of numpy arrays per video."""
    steps = [item["features"].shape[0] for item in items]
    feats = torch.zeros(len(items), max(steps), items[0]["features"].shape[1])
    for i, item in enumerate(items):
        feats[i, : steps[i]] = item["features"]
    return {
        "features": feats,
        "valid": torch.tensor(steps),
        "labels": torch.stack([item["labels"] for item in items]),
        "length": torch.tensor([item["length"] for item in items]),
        "seconds_per_step": torch.tensor(
            [item["seconds_per_step"] for item in items], dtype=torch.float64
        ),
        "index": torch.tensor([item["index"] for item in items]),
        "video_id": [item["video_id"] for item in items],
        "gt_segments": [item["gt_segments"] for item in items],
        "gt_labels": [item["gt_labels"] for item in items],
    }


class GeneratorDataModule(ResumableDataModule):
    """Training videos (random-perturb sampling, shuffled), the test videos for validation and
    testing (the research code evaluates on them every ``val_every`` steps; nothing is selected
    on them), and :meth:`loader` over either subset for prediction (pseudo labels on ``train``,
    detections on ``test``)."""

    batch_size_key = "generator.data.batch_size"

    def __init__(
        self,
        data: StageData,
        num_segments: int = 750,
        batch_size: int = 16,
        eval_batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(data, batch_size, eval_batch_size, num_workers, seed)
        self.num_segments = num_segments

    def loader(self, subset: str, train: bool = False) -> DataLoader:
        """A loader over the ``train``, ``val`` (held out) or ``test`` videos (``train=True``:
        training sampling)."""
        videos = self.videos[subset]
        dataset = GeneratorVideos(self.data, videos, self.num_segments, train, self.seed)
        drop_last = train and len(videos) > self.batch_size
        return self.make_loader(dataset, subset, train, collate_videos, drop_last)
