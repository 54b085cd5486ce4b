"""Building the student stage's LightningModule and DataModule from config: one way for every
caller (the pipeline's stage, ``fustal.evaluate``, ``fustal.predict``, the benchmark scripts).

``module_cfg`` / ``data_cfg`` are the ``_target_`` nodes ``student.module`` and
``student.data``; what follows from the data is filled in here. ``target`` replaces the module's
``_target_`` (e.g. a subclass in a benchmark); a ``data_cfg`` of None builds the DataModule with
its class defaults. Objects are passed to the partial, not through the config (OmegaConf would
turn them into dicts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from hydra.utils import instantiate

from fustal.config import target_node
from fustal.data.dataset import StageData
from fustal.data.module_arguments import module_arguments
from fustal.data.student_datamodule import PseudoLabelDataModule, Targets, VideoScores
from fustal.student.model import TriDet
from fustal.student.module import StudentModule


def student_module(
    module_cfg: Any,
    data: StageData,
    tiou_thresholds: Sequence[float],
    target: Any = None,
    **stage_arguments: Any,
) -> StudentModule:
    """The student's LightningModule (``student.module``) for ``data``; ``stage_arguments``:
    what the stage sets (epochs, fusion)."""
    node = {**target_node(module_cfg, StudentModule, target), **stage_arguments}
    make = instantiate(node, _partial_=True, _convert_="all", _recursive_=False)
    return make(**module_arguments(data, tiou_thresholds))


def student_datamodule(
    data_cfg: Any,
    data: StageData,
    model: TriDet,
    seed: int = 0,
    targets: Targets | None = None,
    video_scores: VideoScores | None = None,
    video_detections: Mapping[str, np.ndarray] | None = None,
    unfiltered: Targets | None = None,
    **overrides: Any,
) -> PseudoLabelDataModule:
    """The student's DataModule (``student.data``) on ``data`` for the network ``model`` (its
    crop/pad length and largest stride), with training ``targets`` (None: the ground truth),
    the ``video_scores`` (or the generator's ``video_detections``, at ``fusion.level=detections``)
    fused into the evaluated videos' detections, and the ``unfiltered`` pseudo labels that
    ``student.data.ignore_score`` reads."""
    node = {**target_node(data_cfg, PseudoLabelDataModule), **overrides}
    return instantiate(node, _partial_=True, _convert_="all")(
        data=data,
        max_seq_len=model.max_seq_len,
        max_stride=model.max_stride,
        seed=seed,
        targets=targets,
        video_scores=video_scores,
        video_detections=video_detections,
        unfiltered=unfiltered,
    )
