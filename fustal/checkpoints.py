"""Loading and identifying saved stage checkpoints (``fustal.evaluate``, ``fustal.predict``).

``fustal.train`` writes Lightning checkpoints: ``student.ckpt`` / ``generator.ckpt`` in a stage
cache entry and ``checkpoints/last.ckpt`` beside them. Their hyperparameters rebuild the module;
which model it is follows from the state dict (``model.*``: TriDet student, ``net.*``:
generator). The hyperparameters also carry the class names and the feature timing
(:func:`fustal.data.module_arguments.feature_timing`) that turn detections on new features
into labelled seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from fustal.data.dataset import StageData
from fustal.errors import FustalError
from fustal.generator.module import GeneratorModule
from fustal.student.module import StudentModule

MODULES: dict[str, type[pl.LightningModule]] = {
    "student": StudentModule,
    "generator": GeneratorModule,
}
STATE_PREFIXES = {"student": "model.", "generator": "net."}


@dataclass
class Checkpoint:
    """A loaded stage checkpoint: which model (``student`` or ``generator``), the module rebuilt
    from its hyperparameters with its weights (eval mode, on the CPU), and its training progress."""

    path: Path
    kind: str
    module: pl.LightningModule
    epoch: int | None = None
    global_step: int | None = None

    @property
    def hparams(self) -> Any:
        """The module's saved hyperparameters (attribute access)."""
        return self.module.hparams

    @property
    def feature_dim(self) -> int:
        return int(self.hparams.feature_dim)

    @property
    def num_classes(self) -> int:
        return int(self.hparams.num_classes)

    @property
    def classes(self) -> list[str] | None:
        """Class names in index order (None for checkpoints written before they were stored)."""
        classes = self.module.hparams.get("classes")
        return None if classes is None else [str(c) for c in classes]

    @property
    def feature_timing(self) -> dict[str, Any] | None:
        timing = self.module.hparams.get("feature_timing")
        return None if timing is None else dict(timing)

    def check_data(self, data: StageData) -> None:
        """Raise :class:`FustalError` unless ``data`` has test videos with the feature
        dimension and the classes the checkpoint was trained on."""
        videos = data.test_videos()
        if not videos:
            raise FustalError(
                f"{data.annotations.source}: no '{data.test_subset}' videos to test on"
            )
        dim = int(data.features.load(videos[0]).shape[1])
        if dim != self.feature_dim:
            raise FustalError(
                f"{self.path}: the {self.kind} takes {self.feature_dim}-dim features, but the"
                f" dataset's are {dim}-dim ({data.features.files(videos[0])[0]})"
            )
        if self.num_classes != data.num_classes:
            raise FustalError(
                f"{self.path}: the {self.kind} predicts {self.num_classes} classes, but the dataset"
                f" has {data.num_classes} ({data.annotations.source})"
            )
        classes = self.classes
        if classes is not None and classes != data.classes:
            first = next(
                i for i, (a, b) in enumerate(zip(classes, data.classes, strict=False)) if a != b
            )
            raise FustalError(
                f"{self.path}: the {self.kind} was trained on other classes than the dataset's"
                f" (class {first}: '{classes[first]}' in the checkpoint, '{data.classes[first]}' in"
                f" {data.annotations.source})"
            )

    def describe(self) -> str:
        return (
            f"{self.kind} checkpoint {self.path} (epoch {self.epoch}, step {self.global_step};"
            f" {self.feature_dim}-dim features, {self.num_classes} classes)"
        )


def read_checkpoint(path: Path) -> Mapping[str, Any]:
    """The raw checkpoint dict (tensors only, loaded on the CPU); a missing, unreadable or
    non-Lightning file is a :class:`FustalError` naming it."""
    if not path.exists():
        raise FustalError(f"ckpt_path: checkpoint not found: {path}")
    if path.is_dir():
        raise FustalError(
            f"ckpt_path: {path} is a folder; pass the student.ckpt or generator.ckpt inside it"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise FustalError(f"{path}: cannot read the checkpoint ({err.strerror or err})") from None
    except Exception:  # torch.load fails in many ways on a file of another kind
        raise FustalError(
            f"{path}: not a readable PyTorch checkpoint (expected a student.ckpt or"
            " generator.ckpt written by fustal.train)"
        ) from None
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("state_dict"), Mapping):
        raise FustalError(f"{path}: not a Lightning checkpoint (it has no 'state_dict')")
    return ckpt


def checkpoint_kind(state_dict: Mapping[str, Any]) -> str | None:
    """``student`` or ``generator`` from the state dict's key prefixes (None: neither)."""
    for kind, prefix in STATE_PREFIXES.items():
        if any(str(key).startswith(prefix) for key in state_dict):
            return kind
    return None


def load_checkpoint(
    path: str | Path, overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> Checkpoint:
    """Load a student or generator checkpoint with Lightning's ``load_from_checkpoint`` (its
    saved hyperparameters rebuild the module); ``overrides[kind]`` replaces hyperparameters of
    that kind (e.g. the student's ``inference`` settings) before the module is rebuilt.

    Raises :class:`FustalError` naming the file when it is missing, not a checkpoint, of another
    model, or when its weights do not fit the model its hyperparameters describe.
    """
    path = Path(path).expanduser()
    ckpt = read_checkpoint(path)
    kind = checkpoint_kind(ckpt["state_dict"])
    if kind is None:
        raise FustalError(
            f"{path}: not a fustal student or generator checkpoint (its weights belong to"
            " another model)"
        )
    kind_overrides = (overrides or {}).get(kind, {})
    kwargs = {**(ckpt.get("hyper_parameters") or {}), **kind_overrides}
    missing = [k for k in ("feature_dim", "num_classes") if k not in kwargs]
    if missing:
        raise FustalError(f"{path}: {kind} checkpoint without the hyperparameters {missing}")
    classes = kwargs.get("classes")
    if classes is not None and len(classes) != kwargs["num_classes"]:
        raise FustalError(
            f"{path}: {kind} checkpoint with {len(classes)} class names for"
            f" {kwargs['num_classes']} classes"
        )
    try:
        module = MODULES[kind].load_from_checkpoint(
            path, map_location="cpu", strict=True, weights_only=True, **kind_overrides
        )
    except RuntimeError as err:  # load_state_dict: missing, unexpected or misshapen weights
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise FustalError(
            f"{path}: the {kind} weights do not fit its hyperparameters ({lines[-1]})"
        ) from None
    except (FustalError, TypeError, ValueError) as err:
        raise FustalError(f"{path}: cannot rebuild the {kind} ({err})") from None
    module.eval()
    return Checkpoint(path, kind, module, ckpt.get("epoch"), ckpt.get("global_step"))
