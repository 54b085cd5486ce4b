"""The base of fustal's DataModules: which videos each of Lightning's loops reads, how they are
batched and sampled, and the position inside the current epoch saved with every checkpoint
(:mod:`fustal.data.sampling`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset

from fustal.data.dataset import StageData
from fustal.data.sampling import EpochSampler, ResumePoint, eval_sampler, rank_batch_size


class ResumableDataModule(pl.LightningDataModule):
    """Shared hooks of fustal's DataModules: training on the ``train`` videos (shuffled, with
    augmentation), validation on the held-out ``val`` videos of
    ``validation=heldout|video_labels`` (on the ``test`` videos without any, as the research code
    does), test and prediction on the ``test`` videos, and the position inside the current epoch
    saved with every checkpoint (:class:`ResumePoint`). Under DDP every loader is sharded by
    rank; ``batch_size`` is the global training batch (each rank loads its share, the config key
    :attr:`batch_size_key`), ``eval_batch_size`` is per process. Subclasses implement
    :meth:`loader`."""

    batch_size_key: str  # the config key of batch_size, named in its errors

    def __init__(
        self, data: StageData, batch_size: int, eval_batch_size: int, num_workers: int, seed: int
    ) -> None:
        super().__init__()
        self.data = data
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.seed = seed
        # the videos of each subset (fixed when the DataModule is built)
        self.videos = {
            "train": data.train_videos(),
            "val": data.val_videos(),
            "test": data.test_videos(),
        }
        self.resume = ResumePoint()

    def loader(self, subset: str, train: bool = False) -> Any:
        """A DataLoader over ``subset``'s videos (``train``: training samples)."""
        raise NotImplementedError

    def make_loader(
        self,
        dataset: Dataset,
        subset: str,
        train: bool,
        collate_fn: Callable[[list[dict[str, Any]]], dict[str, Any]],
        drop_last: bool = False,
    ) -> DataLoader:
        """The DataLoader of ``dataset`` (one item per video of ``subset``): training takes this
        rank's share of the batch, shuffled and resumable; evaluation goes in order."""
        num_items = len(self.videos[subset])
        if train:
            batch_size = rank_batch_size(self.batch_size, self.batch_size_key)
            sampler = EpochSampler(num_items, self.seed, True, self.resume, batch_size)
        else:
            batch_size = self.eval_batch_size
            sampler = eval_sampler(subset, num_items, self.seed)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=self.num_workers,
            collate_fn=collate_fn,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> Any:
        return self.loader("train", train=True)

    def val_dataloader(self) -> Any:
        return self.loader("val" if self.videos["val"] else "test")

    def test_dataloader(self) -> Any:
        return self.loader("test")

    def predict_dataloader(self) -> Any:
        return self.test_dataloader()

    def state_dict(self) -> dict[str, Any]:
        return self.resume.state(self.trainer)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.resume.load(state_dict)
