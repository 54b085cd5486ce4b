"""Reading video files with PyAV: their duration and fps, and their frames resampled to a fixed
frame rate, resized and centre-cropped, grouped into the clips a backbone takes."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from fustal.errors import FustalError

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp"}
)
# sample times within this many seconds of a frame's time take that frame
TIME_EPS = 1e-6


@dataclass(frozen=True)
class VideoInfo:
    """A video file's duration in seconds and its frame rate (None: not stored)."""

    duration: float
    fps: float | None


def video_files(folder: Path) -> list[Path]:
    """The video files of ``folder`` (by suffix, case-insensitive), sorted by name; two files
    with one stem (one video id) are an error naming both."""
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
    )
    seen: dict[str, Path] = {}
    for path in files:
        if path.stem in seen:
            raise FustalError(f"{path} and {seen[path.stem]}: two videos with the id {path.stem}")
        seen[path.stem] = path
    return files


def _open(path: Path) -> av.container.InputContainer:
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise FustalError(f"{path}: cannot open the video ({err})") from None
    if not container.streams.video:
        container.close()
        raise FustalError(f"{path}: no video stream")
    return container


def probe(path: Path) -> VideoInfo:
    """Duration and fps from the file's header (nothing is decoded)."""
    with _open(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            raise FustalError(f"{path}: the video stores no duration")
    if not duration > 0:
        raise FustalError(f"{path}: duration {duration} s")
    return VideoInfo(duration, float(rate) if rate else None)


def output_size(height: int, width: int, resize_size: tuple[int, ...]) -> tuple[int, int]:
    """``(H, W)`` a frame is resized to: ``resize_size`` when it is ``(H, W)``, else its shorter
    side to ``resize_size[0]``, keeping the aspect ratio."""
    if len(resize_size) == 2:
        return resize_size[0], resize_size[1]
    scale = resize_size[0] / min(height, width)
    return max(resize_size[0], round(height * scale)), max(resize_size[0], round(width * scale))


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central ``[size, size, 3]`` of an ``[H, W, 3]`` image."""
    top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    return image[top : top + size, left : left + size]


def sample_frames(
    path: Path, fps: float, resize_size: tuple[int, ...], crop_size: int
) -> Iterator[np.ndarray]:
    """The video's frames at ``fps`` (sample ``k`` at ``k / fps`` seconds shows the frame on
    screen then), each resized and centre-cropped to ``[crop_size, crop_size, 3]`` uint8 RGB.
    Only frames that are sampled are converted."""
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or stream.guessed_rate or fps)
        k, start, last = 0, None, None
        held: av.VideoFrame | None = None
        image: np.ndarray | None = None
        try:
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else (last or 0.0) + 1.0 / rate
                start = t if start is None else start
                while held is not None and k / fps < t - start - TIME_EPS:
                    if image is None:
                        image = _convert(held, resize_size, crop_size)
                    yield image
                    k += 1
                held, image, last = frame, None, t
        except av.error.FFmpegError as err:
            raise FustalError(f"{path}: cannot decode the video ({err})") from None
        if held is None or start is None or last is None:
            raise FustalError(f"{path}: no decodable frame")
        end = last - start + 1.0 / rate  # the last frame stays on screen for one frame period
        while k / fps < end - TIME_EPS:
            if image is None:
                image = _convert(held, resize_size, crop_size)
            yield image
            k += 1


def _convert(frame: av.VideoFrame, resize_size: tuple[int, ...], crop_size: int) -> np.ndarray:
    height, width = output_size(frame.height, frame.width, resize_size)
    rgb = frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="BILINEAR")
    return centre_crop(rgb, crop_size)


def clips(frames: Iterator[np.ndarray], window: int, stride: int) -> Iterator[np.ndarray]:
    """Clips ``[window, S, S, 3]`` starting every ``stride`` frames: clip ``g`` holds frames
    ``[g * stride, g * stride + window)``; a video shorter than one window gives one clip, its
    last frame repeated."""
    buffer: deque[np.ndarray] = deque(maxlen=window)
    count = 0  # frames seen
    for image in frames:
        buffer.append(image)
        count += 1
        if count >= window and (count - window) % stride == 0:
            yield np.stack(buffer)
    if 0 < count < window:
        yield np.stack([*buffer, *[buffer[-1]] * (window - count)])
