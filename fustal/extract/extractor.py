"""Features of video files: clips of ``window`` frames every ``stride`` frames at a fixed ``fps``
through a video backbone, one ``[T, D]`` float32 array per video, written beside a
``features.json`` sidecar that records how they were made (the custom layout of
``conf/features/custom.yaml``)."""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from fustal.data.features import SIDECAR, describe_features, read_sidecar
from fustal.errors import FustalError
from fustal.extract.backbones import BACKBONES, build_backbone, check_available
from fustal.extract.decode import (
    VIDEO_SUFFIXES,
    VideoInfo,
    clips,
    probe,
    sample_frames,
    video_files,
)
from fustal.io import atomic_open, ensure_writable_dir, write_json, write_npy

TOOL = "fustal.extract"
WEIGHTS = ("kinetics400", "none")
VIDEO_TABLE = "videos.csv"
# clips decoded ahead of the network (a background thread decodes while it runs)
PREFETCH = 64
T = TypeVar("T")


@dataclass(frozen=True)
class ExtractConfig:
    """How features are extracted. ``weights``: ``kinetics400`` or ``none`` (random weights drawn
    from ``seed``); ``crop_size`` None: the backbone's; ``device``: ``auto`` (a GPU when there is
    one), ``cpu``, ``cuda``, ``cuda:1``, ..."""

    backbone: str = "r2plus1d_18"
    weights: str = "kinetics400"
    seed: int = 0
    fps: float = 15.0
    window: int = 16
    stride: int = 8
    crop_size: int | None = None
    batch_size: int = 32
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise FustalError(
                f"backbone: unknown backbone '{self.backbone}' (one of {', '.join(BACKBONES)})"
            )
        if self.weights not in WEIGHTS:
            raise FustalError(
                f"weights: expected one of {', '.join(WEIGHTS)}, got {self.weights!r}"
            )
        if not (np.isfinite(self.fps) and self.fps > 0):
            raise FustalError(f"fps: expected a positive number, got {self.fps!r}")
        for key in ("window", "stride", "batch_size"):
            if getattr(self, key) < 1:
                raise FustalError(f"{key}: expected a positive integer, got {getattr(self, key)}")
        if self.crop_size is not None and self.crop_size < 1:
            raise FustalError(f"crop_size: expected a positive integer, got {self.crop_size}")
        BACKBONES[self.backbone].check_input(self.window, self.crop)

    @property
    def crop(self) -> int:
        return self.crop_size or BACKBONES[self.backbone].crop_size

    def record(self) -> dict[str, Any]:
        """The sidecar: timing and the extractor's identity (what makes two extractions give the
        same features; batch size and device do not)."""
        backbone = BACKBONES[self.backbone]
        return {
            "fps": float(self.fps),
            "window_frames": self.window,
            "stride_frames": self.stride,
            "extractor": {
                "tool": TOOL,
                "backbone": self.backbone,
                "weights": self.weights,
                "seed": self.seed if self.weights == "none" else None,
                "crop_size": self.crop,
                "resize_size": list(backbone.resize_for(self.crop)),
                "dim": backbone.dim,
            },
        }

    @classmethod
    def from_record(cls, timing: Mapping[str, Any], where: str, **run: Any) -> ExtractConfig:
        """The config that made features with this timing and extractor record (a checkpoint's
        ``feature_timing``); ``run``: batch size and device. Not made by ``fustal.extract``: a
        :class:`FustalError` naming ``where``."""
        extractor = timing.get("extractor") or {}
        if extractor.get("tool") != TOOL:
            raise FustalError(
                f"{where}: trained on features {describe_features(timing)}, not made by"
                f" {TOOL}; video files can only be turned into the features of a checkpoint"
                f" trained on {TOOL} features (pass .npy features made like its training ones)"
            )
        return cls(
            backbone=str(extractor["backbone"]),
            weights=str(extractor["weights"]),
            seed=int(extractor["seed"] or 0),
            fps=float(timing["fps"]),
            window=int(timing["window_frames"]),
            stride=int(timing["stride_frames"]),
            crop_size=int(extractor["crop_size"]),
            **run,
        )


def resolve_device(device: str) -> torch.device:
    """``auto``: the first GPU when there is one, else the CPU; a GPU that is not there is an
    error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise FustalError(f"device: not a torch device: {device!r}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise FustalError(f"device: {device} asked for, but torch sees no CUDA GPU")
    return resolved


def prefetch(items: Iterable[T], size: int) -> Iterator[T]:
    """``items``, produced by a background thread up to ``size`` ahead (PyAV decodes without
    holding the GIL); an exception in the thread is raised here."""
    box: queue.Queue = queue.Queue(maxsize=size)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                box.put(item)
            box.put(done)
        except BaseException as err:  # handed to the consumer, which raises it
            box.put(err)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while (item := box.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                box.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.1)


class Extractor:
    """A backbone on a device that turns one video file into its ``[T, D]`` features."""

    def __init__(self, cfg: ExtractConfig) -> None:
        self.cfg = cfg
        self.backbone = BACKBONES[cfg.backbone]
        self.device = resolve_device(cfg.device)
        self.model = build_backbone(cfg.backbone, cfg.weights == "kinetics400", cfg.seed)
        self.model.to(self.device)
        shape = (1, 1, 1, 1, 3)
        self.mean = torch.tensor(self.backbone.mean, device=self.device).view(shape)
        self.std = torch.tensor(self.backbone.std, device=self.device).view(shape)

    @torch.inference_mode()
    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Clips ``[B, L, S, S, 3]`` uint8 -> features ``[B, D]`` float32."""
        x = torch.from_numpy(batch).to(self.device, non_blocking=True).float().div_(255.0)
        x = ((x - self.mean) / self.std).permute(0, 4, 1, 2, 3).contiguous()
        return self.model(x).float().cpu().numpy()

    def features(self, path: Path) -> np.ndarray:
        """The features ``[T, D]`` float32 of one video file."""
        cfg = self.cfg
        frames = sample_frames(path, cfg.fps, self.backbone.resize_for(cfg.crop), cfg.crop)
        batches = prefetch(clips(frames, cfg.window, cfg.stride), PREFETCH)
        rows = []
        while batch := list(itertools.islice(batches, cfg.batch_size)):
            rows.append(self.embed(np.stack(batch)))
        if not rows:
            raise FustalError(f"{path}: no frames decoded")
        return np.concatenate(rows).astype(np.float32, copy=False)


def finished(path: Path, dim: int) -> bool:
    """Whether ``path`` holds a complete ``[T, dim]`` feature file (a resumed run skips it)."""
    try:
        shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
    except (OSError, ValueError, EOFError):
        return False
    return len(shape) == 2 and shape[0] > 0 and shape[1] == dim


def claim_folder(out_dir: Path, record: Mapping[str, Any]) -> None:
    """Write the sidecar into ``out_dir``, or check that the one there is this extraction's
    (resuming); features of another extraction in the folder are an error."""
    ensure_writable_dir(out_dir)
    path = out_dir / SIDECAR
    if path.exists():
        theirs = {k: v for k, v in asdict(read_sidecar(path)).items() if k != "path"}
        if theirs != dict(record):
            raise FustalError(
                f"{path}: {out_dir} holds features {describe_features(theirs)}; this run makes"
                f" features {describe_features(record)}: extract into another folder"
            )
        return
    write_json(path, record)


def write_video_table(path: Path, infos: Mapping[str, VideoInfo]) -> None:
    """``video,duration,fps`` of every video (the custom layout's video table)."""
    with atomic_open(path) as handle:
        handle.write("video,duration,fps\n")
        for vid, info in infos.items():
            fps = "" if info.fps is None else f"{info.fps:.6g}"
            handle.write(f"{vid},{info.duration:.6f},{fps}\n")


def extract_folder(
    video_dir: Path, out_dir: Path, cfg: ExtractConfig, console: Console
) -> dict[str, VideoInfo]:
    """Features of every video of ``video_dir`` into ``out_dir/<video>.npy`` (each written
    atomically; videos whose file is complete are skipped, so an interrupted run resumes), the
    sidecar ``features.json`` and the video table ``videos.csv``. Returns each video's duration
    and fps."""
    if not video_dir.is_dir():
        raise FustalError(f"video folder not found: {video_dir}")
    videos = video_files(video_dir)
    if not videos:
        raise FustalError(
            f"{video_dir}: no video files ({', '.join(sorted(s[1:] for s in VIDEO_SUFFIXES))})"
        )
    check_available(cfg.backbone)
    record = cfg.record()
    claim_folder(out_dir, record)
    infos = {path.stem: probe(path) for path in videos}
    dim = BACKBONES[cfg.backbone].dim
    todo = [p for p in videos if not finished(out_dir / f"{p.stem}.npy", dim)]
    console.print(
        f"extract: {len(videos)} videos in {video_dir} ({len(videos) - len(todo)} done before),"
        f" features {describe_features(record)} -> {out_dir}"
    )
    if todo:
        extractor = Extractor(cfg)
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("extract", total=len(todo))
            for path in todo:
                progress.update(task, description=path.name)
                write_npy(out_dir / f"{path.stem}.npy", extractor.features(path))
                progress.advance(task)
    write_video_table(out_dir / VIDEO_TABLE, infos)
    return infos
