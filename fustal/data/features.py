"""Snippet-feature readers for the on-disk layouts, and feature-grid <-> seconds conversion.

Layouts (``features`` config group):

- ``nonoverlap`` (CoLA/WTAL): ``features/<subset>/<stream>/<vid>.npy`` per stream, ``[T, D_s]``,
  concatenated along channels; ``stride_frames = window_frames`` at a fixed ``fps``;
- ``overlap`` (ActionFormer): ``i3d_features/<vid>.npy`` ``[T, D]``, windows of ``window_frames``
  every ``stride_frames`` at the video's own fps;
- ``resized`` (ActivityNet): one ``[T, D]`` file per video resized to a fixed T; each step covers
  ``duration / T`` seconds.

Time of feature step ``g`` (centre): ``g * stride_s + 0.5 * window_s`` seconds.

A folder of feature files may carry a sidecar, ``features.json`` (written by ``fustal.extract``),
that says how they were made: ``fps``, ``window_frames`` and ``stride_frames`` (or
``step_seconds`` and ``window_seconds``) and an ``extractor`` record. Config keys left null take
the sidecar's values; a key set in both must agree.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fustal.data.annotations import Video
from fustal.data.spec import ViewConfig
from fustal.errors import FustalError
from fustal.io import read_json

LAYOUTS = ("nonoverlap", "overlap", "resized")
NPY_MAGIC = b"\x93NUMPY"
SIDECAR = "features.json"
FRAME_KEYS = ("fps", "window_frames", "stride_frames")
SECOND_KEYS = ("step_seconds", "window_seconds")


@dataclass(frozen=True)
class Timing:
    """Seconds per feature step and per feature window of one video."""

    stride_s: float
    window_s: float


def seconds_to_grid(t: np.ndarray | float, timing: Timing) -> np.ndarray:
    """Seconds -> feature-grid units: ``(t - window_s / 2) / stride_s``."""
    return (np.asarray(t, dtype=np.float64) - 0.5 * timing.window_s) / timing.stride_s


def grid_to_seconds(
    g: np.ndarray | float, timing: Timing, duration: float | None = None
) -> np.ndarray:
    """Feature-grid units -> seconds, clipped to ``[0, duration]``."""
    t = np.asarray(g, dtype=np.float64) * timing.stride_s + 0.5 * timing.window_s
    return np.clip(t, 0.0, duration if duration is not None else np.inf)


def detections_to_seconds(
    rows: np.ndarray, offset: float, timing: Timing, duration: float | None = None
) -> np.ndarray:
    """Detections ``[K, 4]`` ``(class, score, start, end)`` on a clip's feature grid (the clip
    starting ``offset`` steps into the video) -> the same rows in seconds, clipped to
    ``[0, duration]``. A detection that becomes zero-length by the clipping is kept: the research
    evaluation counts it as a false positive, and dropping it would change the mAP."""
    out = np.asarray(rows, dtype=np.float64).reshape(-1, 4).copy()
    out[:, 2:4] = grid_to_seconds(out[:, 2:4] + offset, timing, duration)
    return out


def resample_indices(
    length: int, num_segments: int, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Indices that resample ``length`` steps to ``num_segments`` (CoLA's sampling).

    With ``rng`` (training, "random perturb"): split ``[0, length)`` into ``num_segments`` equal
    bins and draw one index per bin, from the bin's first step up to the next bin's first step
    inclusive (the last bin up to ``length - 1``); identity when ``length == num_segments``.
    Without ``rng`` (testing): ``floor(arange(num_segments) * length / num_segments)``, or every
    step when ``length <= num_segments``. Returns ``[num_segments]`` (or ``[length]``) int64.
    """
    if length == num_segments or (rng is None and length < num_segments):
        return np.arange(length, dtype=np.int64)
    starts = np.floor(np.arange(num_segments) * length / num_segments).astype(np.int64)
    if rng is None:
        return starts
    highs = np.maximum(np.append(starts[1:], length - 1), starts)
    return starts + np.floor(rng.random(num_segments) * (highs - starts + 1)).astype(np.int64)


def positive_number(where: str, value: Any) -> float:
    """``value`` as a positive float, else a :class:`FustalError` naming ``where``."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (is_number and np.isfinite(value) and value > 0):
        raise FustalError(f"{where}: expected a positive number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Sidecar:
    """How the feature files of a folder were made (its ``features.json``): ``fps`` (None: each
    video's own), frames per window and per step, and the extractor record (None: unknown).
    Sidecars in seconds (``step_seconds``, ``window_seconds``) are held as frames of a 1 fps
    clock, which gives the same seconds."""

    path: Path
    fps: float | None
    window_frames: float
    stride_frames: float
    extractor: dict[str, Any] | None = None


def read_sidecar(path: Path) -> Sidecar:
    """Read and check a ``features.json`` sidecar; bad content names the file and the key."""
    data = read_json(path, "feature sidecar")
    if not isinstance(data, Mapping):
        raise FustalError(f"{path}: expected a JSON object (fps, window_frames, stride_frames)")
    known = (*FRAME_KEYS, *SECOND_KEYS, "extractor")
    unknown = [str(k) for k in data if k not in known]
    if unknown:
        raise FustalError(f"{path}: unknown key '{unknown[0]}' (keys: {', '.join(known)})")
    extractor = data.get("extractor")
    if extractor is not None and not isinstance(extractor, dict):
        raise FustalError(f"{path}: extractor: expected an object, got {extractor!r}")
    if any(k in data for k in SECOND_KEYS):
        if any(k in data for k in FRAME_KEYS):
            raise FustalError(
                f"{path}: give either fps / window_frames / stride_frames or step_seconds /"
                " window_seconds, not both"
            )
        step = positive_number(f"{path}: step_seconds", data.get("step_seconds"))
        window = positive_number(f"{path}: window_seconds", data.get("window_seconds", step))
        return Sidecar(path, 1.0, window, step, extractor)
    fps = data.get("fps")
    return Sidecar(
        path,
        None if fps is None else positive_number(f"{path}: fps", fps),
        positive_number(f"{path}: window_frames", data.get("window_frames")),
        positive_number(f"{path}: stride_frames", data.get("stride_frames")),
        extractor,
    )


def merge_sidecar(
    ours: Mapping[str, Any], sidecar: Sidecar, where: str = "features"
) -> dict[str, Any]:
    """Each of ``ours`` (the timing keys and ``extractor`` of the config node ``where``): ours
    where set, else the sidecar's; a value set in both must agree."""
    out = {}
    for key, mine in ours.items():
        theirs = getattr(sidecar, key)
        if mine is not None and theirs is not None and mine != theirs:
            raise FustalError(
                f"{where}.{key}: {mine!r} disagrees with {key} {theirs!r} in {sidecar.path}"
                f" (leave {where}.{key} null to take the sidecar's)"
            )
        out[key] = mine if mine is not None else theirs
    return out


def describe_features(timing: Mapping[str, Any]) -> str:
    """``of r2plus1d_18 (kinetics400 weights, 112 px), 16-frame windows every 8 frames at 15
    fps``: how features were made, from a sidecar's values or a checkpoint's feature timing."""
    extractor = timing.get("extractor")
    if extractor and "backbone" in extractor:
        weights = extractor.get("weights")
        weights = f"random weights, seed {extractor.get('seed')}" if weights == "none" else weights
        who = f"of {extractor['backbone']} ({weights}, {extractor.get('crop_size')} px)"
    elif extractor:
        who = f"of the extractor {extractor}"
    else:
        who = "of an unrecorded extractor"
    if timing.get("layout") == "resized":
        return f"{who}, resized to {timing.get('steps') or 'a fixed number of'} steps per video"
    fps, window, stride = timing.get("fps"), timing["window_frames"], timing["stride_frames"]
    rate = "each video's fps" if fps is None else f"{fps:g} fps ({stride / fps:.3g} s per step)"
    return f"{who}, {window:g}-frame windows every {stride:g} frames at {rate}"


@dataclass(frozen=True)
class FeatureSpec:
    """Where and how the features of one layout are stored under a dataset root; ``sidecar``:
    the ``features.json`` whose values it took (None: none read)."""

    root: Path
    layout: str
    path: str
    streams: tuple[str, ...] | None = None
    window_frames: float | None = None
    stride_frames: float | None = None
    fps: float | None = None
    dim: int | None = None
    extractor: dict[str, Any] | None = None
    sidecar: Path | None = None

    @classmethod
    def from_config(
        cls, view: ViewConfig, root: str | Path, where: str = "features"
    ) -> FeatureSpec:
        """The spec of the ``features`` config node ``where``; timing keys left null come from
        its sidecar (``sidecar``, relative to ``root``) when that file exists."""
        if view.layout not in LAYOUTS:
            raise FustalError(f"{where}.layout: unknown layout '{view.layout}' (one of {LAYOUTS})")
        timing = {k: getattr(view, k) for k in (*FRAME_KEYS, "extractor")}
        sidecar_path = Path(root) / view.sidecar if view.sidecar else None
        sidecar = None
        if sidecar_path is not None and sidecar_path.is_file():
            sidecar = sidecar_path
            timing = merge_sidecar(timing, read_sidecar(sidecar_path), where)
        unset = [k for k in ("window_frames", "stride_frames") if timing[k] is None]
        if view.layout != "resized" and unset:
            source = f"the sidecar {sidecar_path} does not exist" if sidecar_path else "no sidecar"
            raise FustalError(
                f"{where}.{unset[0]}: not set, and {source} (the {view.layout} layout needs"
                " window_frames and stride_frames: set them, or write fps / window_frames /"
                f" stride_frames into {SIDECAR} beside the features)"
            )
        return cls(
            root=Path(root),
            layout=view.layout,
            path=view.path,
            streams=tuple(view.streams) if view.streams else None,
            dim=view.dim,
            sidecar=sidecar,
            **timing,
        )

    def folder(self) -> Path:
        """The folder every feature file lies under: the path template's fixed leading part."""
        return self.root / os.path.dirname(self.path.split("{")[0])

    def files(self, video: Video) -> list[Path]:
        """The feature file(s) of a video (one per stream for the non-overlapping layout)."""
        return [
            self.root / self.path.format(video=video.id, subset=video.subset, stream=stream)
            for stream in self.streams or ("",)
        ]

    def missing(self, video: Video) -> list[Path]:
        return [f for f in self.files(video) if not f.is_file()]

    def load(self, video: Video) -> np.ndarray:
        """Read, check and concatenate a video's features: ``[T, D]`` float32."""
        files = self.files(video)
        arrays = [_read_npy(f) for f in files]
        if len({a.shape[0] for a in arrays}) > 1:
            names = ", ".join(f"{f}: {a.shape[0]}" for f, a in zip(files, arrays, strict=True))
            raise FustalError(f"video {video.id}: streams have different lengths ({names})")
        feats = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=1)
        if self.dim is not None and feats.shape[1] != self.dim:
            raise FustalError(
                f"{files[0]}: feature dimension {feats.shape[1]}, expected {self.dim}"
            )
        return feats

    def timing(self, video: Video, length: int) -> Timing:
        """Seconds per step and per window for a video whose features have ``length`` steps."""
        if self.layout == "resized":
            if video.duration is None:
                raise FustalError(f"video {video.id}: the resized layout needs a duration")
            step = video.duration / length
            return Timing(step, step)
        fps = self.fps if self.fps is not None else video.fps
        if fps is None:
            raise FustalError(f"video {video.id}: no fps in the annotations and features.fps unset")
        if self.stride_frames is None or self.window_frames is None:
            raise FustalError(
                f"{self.root}: features.stride_frames and features.window_frames are unset and no"
                " features.json gives them"
            )
        return Timing(float(self.stride_frames) / fps, float(self.window_frames) / fps)


def _read_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FustalError(f"{path}: feature file not found")
    try:
        with open(path, "rb") as handle:
            if handle.read(len(NPY_MAGIC)) != NPY_MAGIC:
                raise FustalError(f"{path}: not a readable .npy file (no NumPy header)")
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise FustalError(f"{path}: not a readable .npy file ({err})") from None
    if arr.ndim != 2:
        raise FustalError(f"{path}: expected a [T, D] array, got shape {tuple(arr.shape)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise FustalError(f"{path}: empty features, shape {tuple(arr.shape)}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise FustalError(f"{path}: features must be floating point, got {arr.dtype}")
    if not np.isfinite(arr).all():
        raise FustalError(f"{path}: features contain NaN or Inf values")
    return arr.astype(np.float32, copy=False)
