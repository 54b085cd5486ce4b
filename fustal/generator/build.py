"""Building the generator stage's LightningModule and DataModule from config: one way for every
caller (the pipeline's stage, ``fustal.evaluate``, ``fustal.predict``, the benchmark scripts).

``module_cfg`` / ``data_cfg`` are the ``_target_`` nodes ``generator.module`` and
``generator.data``; what follows from the data is filled in here. ``target`` replaces the
module's ``_target_`` (e.g. a subclass in a benchmark); a ``data_cfg`` of None builds the
DataModule with its class defaults. Objects are passed to the partial, not through the config
(OmegaConf would turn them into dicts).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from hydra.utils import instantiate

from fustal.config import target_node
from fustal.data.dataset import StageData
from fustal.data.generator_datamodule import GeneratorDataModule
from fustal.data.module_arguments import module_arguments
from fustal.generator.module import GeneratorModule


def generator_datamodule(
    data_cfg: Any, data: StageData, seed: int = 0, **overrides: Any
) -> GeneratorDataModule:
    """The generator's DataModule (``generator.data``) on ``data``."""
    node = {**target_node(data_cfg, GeneratorDataModule), **overrides}
    return instantiate(node, _partial_=True, _convert_="all")(data=data, seed=seed)


def generator_module(
    module_cfg: Any,
    data: StageData,
    tiou_thresholds: Sequence[float],
    num_segments: int,
    target: Any = None,
    validation: str = "test",
) -> GeneratorModule:
    """The generator's LightningModule (``generator.module``) for ``data``; ``validation`` (what
    its validation loop scores: :class:`~fustal.training.evaluated_module.EvaluatedModule`)
    goes to a module whose constructor takes it (a user's may not: docs/extending.md)."""
    node = target_node(module_cfg, GeneratorModule, target)
    make = instantiate(node, _partial_=True, _convert_="all", _recursive_=False)
    arguments = {**module_arguments(data, tiou_thresholds), "num_segments": num_segments}
    if "validation" in inspect.signature(make.func).parameters:
        arguments["validation"] = validation
    return make(**arguments)
