"""Inputs a run reads from files instead of computing them, as stages (not cached, keyed by the
file's content): a pseudo-label file (``pseudo_labels=PATH``, in place of the generator's) and a
video-level score file (``fusion=file``, in place of the generator's scores)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from omegaconf import DictConfig, OmegaConf

from fustal.errors import FustalError
from fustal.fusion import read_score_file
from fustal.metrics.results import VideoDetections, read_rows
from fustal.pipeline.cache import file_digest
from fustal.pipeline.stage import Outputs, Stage
from fustal.viz.pictures import RunPictures


@dataclass
class PseudoLabels:
    """Pseudo labels read from ``source`` (no metrics of their own)."""

    pseudo_labels: VideoDetections
    source: str
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScoreFileOutputs:
    """Video-level class scores ``{video_id: [C]}`` read from ``source``."""

    video_scores: dict[str, np.ndarray]
    source: str
    metrics: dict[str, Any] = field(default_factory=dict)


class FileStage(Stage[Outputs]):
    """The shared part of the file stages: the file named by the config key ``option`` (its
    content hash is the key), nothing to save."""

    option: ClassVar[str]
    cached = False

    @property
    def path(self) -> Path:
        return Path(str(OmegaConf.select(self.cfg, self.option)))

    def key_parts(self) -> dict[str, Any]:
        if not self.path.is_file():
            raise FustalError(f"{self.option}: file not found: {self.path}")
        return {"sha256": file_digest(self.path)}

    def save(self, outputs: Outputs, folder: Path) -> None:
        """Nothing to write: the file is the input."""


class PseudoLabelFile(FileStage[PseudoLabels]):
    name = "pseudo_labels"
    option = "pseudo_labels"

    def compute(self, folder: Path) -> PseudoLabels:
        rows = read_rows(self.path, self.ctx.data.student.classes, str(self.path))
        return PseudoLabels(rows, str(self.path))

    def show(self, outputs: PseudoLabels, shown: RunPictures) -> None:
        shown.pseudo["raw"] = shown.train_tracks["pseudo labels (raw)"] = outputs.pseudo_labels


def pseudo_label_source(cfg: DictConfig) -> str:
    """The stage whose pseudo labels the filter receives: a file's (``pseudo_labels=PATH``)
    or the generator's."""
    return PseudoLabelFile.name if cfg.pseudo_labels else "generator"


class ScoreFile(FileStage[ScoreFileOutputs]):
    """``fusion.score_file``: every test and held-out video must have scores; training videos
    are read where the file has them (the pictures)."""

    name = "scores"
    option = "fusion.score_file"

    def compute(self, folder: Path) -> ScoreFileOutputs:
        data = self.ctx.data.student
        scores = read_score_file(
            self.path,
            data.classes,
            [v.id for v in data.test_videos() + data.val_videos()],
            [v.id for v in data.train_videos()],
        )
        return ScoreFileOutputs(scores, str(self.path))
