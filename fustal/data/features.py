"""Snippet-feature readers for the on-disk layouts, and feature-grid <-> seconds conversion.

Layouts (``features`` config group):

- ``nonoverlap`` (CoLA/WTAL): ``features/<subset>/<stream>/<vid>.npy`` per stream, ``[T, D_s]``,
  concatenated along channels; ``stride_frames = window_frames`` at a fixed ``fps``;
- ``overlap`` (ActionFormer): ``i3d_features/<vid>.npy`` ``[T, D]``, windows of ``window_frames``
  every ``stride_frames`` at the video's own fps;
- ``resized`` (ActivityNet): one ``[T, D]`` file per video resized to a fixed T; each step covers
  ``duration / T`` seconds.

Time of feature step ``g`` (centre): ``g * stride_s + 0.5 * window_s`` seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fustal.data.annotations import Video
from fustal.errors import FustalError

LAYOUTS = ("nonoverlap", "overlap", "resized")
NPY_MAGIC = b"\x93NUMPY"


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
    if rng is None:
        if length <= num_segments:
            return np.arange(length, dtype=np.int64)
        return np.floor(np.arange(num_segments) * length / num_segments).astype(np.int64)
    if length == num_segments:
        return np.arange(num_segments, dtype=np.int64)
    starts = np.floor(np.arange(num_segments) * length / num_segments).astype(np.int64)
    highs = np.append(starts[1:], length - 1)
    highs = np.maximum(highs, starts)
    return starts + np.floor(rng.random(num_segments) * (highs - starts + 1)).astype(np.int64)


@dataclass(frozen=True)
class FeatureSpec:
    """Where and how the features of one layout are stored under a dataset root."""

    root: Path
    layout: str
    path: str
    streams: tuple[str, ...] | None = None
    window_frames: float | None = None
    stride_frames: float | None = None
    fps: float | None = None
    dim: int | None = None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], root: str | Path) -> FeatureSpec:
        layout = str(cfg["layout"])
        if layout not in LAYOUTS:
            raise FustalError(f"features.layout: unknown layout '{layout}' (one of {LAYOUTS})")
        streams = cfg.get("streams")
        return cls(
            root=Path(root),
            layout=layout,
            path=str(cfg["path"]),
            streams=tuple(streams) if streams else None,
            window_frames=cfg.get("window_frames"),
            stride_frames=cfg.get("stride_frames"),
            fps=cfg.get("fps"),
            dim=cfg.get("dim"),
        )

    def files(self, video: Video) -> list[Path]:
        """The feature file(s) of a video (one per stream for the non-overlapping layout)."""
        streams = self.streams or ("",)
        return [
            self.root / self.path.format(video=video.id, subset=video.subset, stream=stream)
            for stream in streams
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
