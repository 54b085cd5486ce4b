"""The base of fustal's DataModules: which videos each of Lightning's loops reads, and the
position inside the current epoch saved with every checkpoint (:mod:`fustal.data.sampling`)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

from fustal.data.dataset import StageData
from fustal.data.sampling import ResumePoint


class ResumableDataModule(pl.LightningDataModule):
    """Shared hooks of fustal's DataModules: training on the ``train`` videos (shuffled, with
    augmentation), validation on the held-out ``val`` videos of
    ``validation=heldout|video_labels`` (on the ``test`` videos without any, as the research code
    does), test and prediction on the ``test`` videos, and the position inside the current epoch
    saved with every checkpoint (:class:`ResumePoint`). Subclasses implement :meth:`loader`."""

    def __init__(self, data: StageData) -> None:
        super().__init__()
        self.data = data
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

    def train_dataloader(self) -> Any:
        return self.loader("train", train=True)

    def val_dataloader(self) -> Any:
        return self.loader("val" if self.videos["val"] else "test")

    def test_dataloader(self) -> Any:
        return self.loader("test")

    def predict_dataloader(self) -> Any:
        return self.loader("test")

    def state_dict(self) -> dict[str, Any]:
        return self.resume.state(self.trainer)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.resume.load(state_dict)
