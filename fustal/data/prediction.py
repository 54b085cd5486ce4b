"""New videos' feature files as a :class:`~fustal.data.dataset.StageData` without ground truth,
checked against the checkpoint that will run on them (``fustal.predict``): their dimension, a
``features.json`` sidecar's timing and extractor, and whether their number of steps fits their
duration at the checkpoint's step length."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fustal.data.annotations import Annotations, Video
from fustal.data.dataset import StageData
from fustal.data.features import (
    SIDECAR,
    FeatureSpec,
    describe_features,
    positive_number,
    read_sidecar,
)
from fustal.errors import FustalError
from fustal.io import read_json

if TYPE_CHECKING:
    from fustal.checkpoints import Checkpoint

SUBSET = "predict"
TIMING_KEYS = ("fps", "stride_frames", "window_frames")
# a duration more than this factor beyond what the feature steps can span is another time scale
SPAN_TOLERANCE = 1.5


def feature_files(folder: Path) -> list[Path]:
    """The ``*.npy`` files of ``folder``, sorted by name."""
    return sorted(p for p in folder.glob("*.npy") if p.is_file())


def check_sidecar(folder: Path, timing: Mapping[str, Any], ckpt: Checkpoint) -> None:
    """A ``features.json`` in ``folder`` must describe the features the checkpoint takes: the
    same window, stride and fps (an fps-less sidecar: each video's own, not checked) and the same
    extractor record."""
    path = folder / SIDECAR
    if not path.is_file():
        return
    sidecar = read_sidecar(path)
    theirs = {**vars(sidecar), "layout": "overlap"}  # its path is neither compared nor shown
    ours = {**timing, "extractor": (ckpt.feature_timing or {}).get("extractor")}
    keys = ["window_frames", "stride_frames", "extractor"] + (["fps"] if sidecar.fps else [])
    if ours["layout"] == "resized" or any(theirs[k] != ours[k] for k in keys):
        raise FustalError(
            f"{path}: these are features {describe_features(theirs)}; the {ckpt.kind} checkpoint"
            f" {ckpt.path} takes features {describe_features(ours)}"
        )


def check_steps(
    path: Path, steps: int, duration: float, timing: Mapping[str, Any], ckpt: Checkpoint
) -> None:
    """The checkpoint's time scale fits a video of ``duration`` seconds with ``steps`` feature
    steps: for windows, ``steps`` steps of ``stride_s`` seconds and a window span it to within
    a factor :data:`SPAN_TOLERANCE`; for resized features, ``steps`` is the trained length."""
    if timing["layout"] == "resized":
        trained = timing.get("steps")
        if trained is not None and steps != trained:
            raise FustalError(
                f"{path}: {steps} feature steps; the {ckpt.kind} checkpoint {ckpt.path} was"
                f" trained on features resized to {trained} steps per video"
            )
        return
    stride_s = timing["stride_frames"] / timing["fps"]
    window_s = timing["window_frames"] / timing["fps"]
    low, high = (steps - 1) * stride_s, steps * stride_s + window_s
    if duration * SPAN_TOLERANCE < low or duration > high * SPAN_TOLERANCE:
        raise FustalError(
            f"{path}: {steps} feature steps of {stride_s:.3g} s (the {ckpt.kind} checkpoint's"
            f" step) span {low:.1f}-{high:.1f} s, but the video lasts {duration:.1f} s: these"
            f" features have another step than the ones {ckpt.path} was trained on"
            f" ({timing['window_frames']:g}-frame windows every {timing['stride_frames']:g}"
            f" frames at {timing['fps']:g} fps)"
        )


def num_steps(path: Path, dim: int) -> int:
    """``T`` of a ``[T, dim]`` .npy file, read from its header."""
    try:
        shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
    except (ValueError, OSError, EOFError) as err:
        raise FustalError(f"{path}: not a readable .npy file ({err})") from None
    if len(shape) != 2 or shape[0] == 0:
        raise FustalError(f"{path}: expected a non-empty [T, D] array, got shape {shape}")
    if shape[1] != dim:
        raise FustalError(f"{path}: feature dimension {shape[1]}, the checkpoint takes {dim}")
    return int(shape[0])


def read_durations(path: str | None) -> dict[str, float]:
    """``{video_id: seconds}`` from a JSON file (empty without one)."""
    if path is None:
        return {}
    data = read_json(Path(path).expanduser(), "durations file")
    if not isinstance(data, Mapping):
        raise FustalError(f"{path}: expected a JSON object {{video_id: seconds}}")
    return {
        str(vid): positive_number(f"{path}: video {vid}: duration", value)
        for vid, value in data.items()
    }


def prediction_data(
    folder: Path,
    files: list[Path],
    classes: list[str],
    timing: Mapping[str, Any],
    ckpt: Checkpoint,
    durations: Mapping[str, float],
) -> StageData:
    """The feature files as a one-subset :class:`StageData` without ground truth, so that the
    pipeline's data modules and inference functions run on them unchanged; each file's length
    is checked against its duration (:func:`check_steps`)."""
    spec = FeatureSpec(
        root=folder,
        layout=str(timing["layout"]),
        path="{video}.npy",
        window_frames=timing["window_frames"],
        stride_frames=timing["stride_frames"],
        fps=timing["fps"],
        dim=ckpt.feature_dim,
    )
    videos = {}
    for path in files:
        vid, steps = path.stem, num_steps(path, ckpt.feature_dim)
        duration = durations.get(vid)
        if duration is None and spec.layout == "resized":
            raise FustalError(
                f"{path}: the checkpoint's resized features need the video's duration; pass"
                " durations=FILE (JSON {video_id: seconds})"
            )
        if duration is not None:
            check_steps(path, steps, duration, timing, ckpt)
        else:
            # not resized: resolve_timing made every timing value a positive number
            frames = (steps - 1) * timing["stride_frames"] + timing["window_frames"]
            duration = frames / timing["fps"]
        videos[vid] = Video(
            vid, SUBSET, float(duration), spec.fps, np.zeros((0, 2)), np.zeros(0, np.int64)
        )
    annotations = Annotations(classes, videos, source=str(folder), subsets=[SUBSET])
    return StageData(annotations, spec, SUBSET, SUBSET)
