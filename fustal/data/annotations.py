"""Temporal action annotations in the ActivityNet schema and its variants.

One loader reads every annotation file the method uses:

- ActivityNet schema (``{"database": {vid: {"subset", "duration", "fps", "annotations":
  [{"label", "segment"}]}}}``): THUMOS'14 ``thumos14.json`` (ActionFormer/TriDet) and the official
  ActivityNet v1.3 ``activity_net.v1-3.min.json``;
- the WTAL ``gt.json`` (segments stored as strings, no duration or fps) with optional
  ``split_<subset>.txt`` files that list the videos of each subset;
- a CSV file ``video,subset,label,start,end`` (one action per row; a row with empty label, start
  and end lists a video without actions) with a video table CSV ``video,duration,fps`` (custom
  datasets; an empty fps: unknown).

Classes are ordered alphabetically unless a class list is given.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fustal.errors import FustalError
from fustal.io import read_json

log = logging.getLogger(__name__)

AMBIGUOUS_LABELS = frozenset({"Ambiguous"})
FORMATS = ("auto", "activitynet", "wtal", "csv")
CSV_COLUMNS = ("video", "subset", "label", "start", "end")
TABLE_COLUMNS = ("video", "duration", "fps")


@dataclass
class Video:
    """One annotated video: segments in seconds and their class indices."""

    id: str
    subset: str
    duration: float | None
    fps: float | None
    segments: np.ndarray  # [M, 2] float64 seconds
    labels: np.ndarray  # [M] int64 class indices

    @property
    def num_segments(self) -> int:
        return int(self.labels.shape[0])

    def video_label(self, num_classes: int) -> np.ndarray:
        """Multi-hot video-level label ``[C]`` float32."""
        y = np.zeros(num_classes, dtype=np.float32)
        y[self.labels] = 1.0
        return y


@dataclass
class Annotations:
    """All videos of one annotation file, with the class list they index into."""

    classes: list[str]
    videos: dict[str, Video]
    source: str = ""
    clipped_segments: int = 0
    subsets: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def has_subset(self, name: str) -> bool:
        return name.lower() in {s.lower() for s in self.subsets}

    def subset(self, name: str) -> list[Video]:
        """Videos of a subset (case-insensitive name), in file order."""
        if not self.has_subset(name):
            known = ", ".join(sorted(self.subsets)) or "none"
            raise FustalError(f"{self.source}: unknown subset '{name}' (subsets: {known})")
        key = name.lower()
        return [v for v in self.videos.values() if v.subset.lower() == key]


def _as_float(value: Any, where: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise FustalError(f"{where}: not a number: {value!r}") from None
    if not np.isfinite(out):
        raise FustalError(f"{where}: not a finite number: {value!r}")
    return out


def read_csv_rows(
    path: Path, columns: Sequence[str], what: str
) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV file whose header names exactly ``columns`` (in any order), as ``(line
    number, {column: stripped text})``."""
    if not path.is_file():
        raise FustalError(f"{what} not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise FustalError(f"{path}: not a UTF-8 CSV file") from None
    reader = csv.DictReader(io.StringIO(text))
    header = [name.strip() for name in reader.fieldnames or []]
    if sorted(header) != sorted(columns):
        raise FustalError(
            f"{path}: expected the header {','.join(columns)}, got {','.join(header) or 'none'}"
        )
    reader.fieldnames = header
    rows = []
    for row in reader:
        if None in row or any(value is None for value in row.values()):
            raise FustalError(f"{path}: line {reader.line_num}: expected {len(columns)} fields")
        rows.append((reader.line_num, {k: v.strip() for k, v in row.items()}))
    return rows


def read_video_table(path: Path) -> dict[str, dict[str, float | None]]:
    """``{video: {"duration", "fps"}}`` from a video table ``video,duration,fps``."""
    table: dict[str, dict[str, float | None]] = {}
    for line, row in read_csv_rows(path, TABLE_COLUMNS, "video table"):
        where = f"{path}: line {line}: video {row['video']}"
        if not row["video"]:
            raise FustalError(f"{path}: line {line}: empty video name")
        if row["video"] in table:
            raise FustalError(f"{where}: listed twice")
        fps = _as_float(row["fps"], f"{where}: fps") if row["fps"] else None
        table[row["video"]] = {
            "duration": _as_float(row["duration"], f"{where}: duration"),
            "fps": fps,
        }
    return table


def csv_database(path: Path, video_table: Path | None) -> dict[str, dict[str, Any]]:
    """An annotation CSV and its video table as an ActivityNet-schema ``database`` (videos in the
    order they first appear; videos only in the table are not part of the dataset)."""
    if video_table is None:
        raise FustalError(
            f"{path}: CSV annotations need a video table (video,duration,fps): set"
            " features.video_table"
        )
    table = read_video_table(video_table)
    database: dict[str, dict[str, Any]] = {}
    for line, row in read_csv_rows(path, CSV_COLUMNS, "annotation file"):
        vid, subset = row["video"], row["subset"]
        where = f"{path}: line {line}: video {vid}"
        if not vid or not subset:
            raise FustalError(f"{path}: line {line}: empty video or subset")
        if vid not in table:
            raise FustalError(f"{where}: not in the video table {video_table}")
        entry = database.setdefault(vid, {"subset": subset, **table[vid], "annotations": []})
        if entry["subset"] != subset:
            raise FustalError(f"{where}: in the subsets '{entry['subset']}' and '{subset}'")
        action = [row["label"], row["start"], row["end"]]
        if any(action) and not all(action):
            raise FustalError(
                f"{where}: label, start and end must all be set (or all empty: a video without"
                " actions)"
            )
        if all(action):
            entry["annotations"].append({"label": action[0], "segment": action[1:]})
    return database


def read_database(
    path: Path, fmt: str, video_table: Path | None
) -> Mapping[str, Mapping[str, Any]]:
    """The ActivityNet-schema ``database`` of an annotation file (JSON, or CSV converted)."""
    source = str(path)
    if fmt not in FORMATS:
        raise FustalError(f"{source}: unknown annotation format '{fmt}' (one of {FORMATS})")
    if fmt == "csv" or (fmt == "auto" and path.suffix.lower() == ".csv"):
        return csv_database(path, video_table)
    data = read_json(path, "annotation file")
    if not isinstance(data, Mapping):
        raise FustalError(f"{source}: expected a JSON object with a 'database' key")
    database = data.get("database")
    if not isinstance(database, Mapping):
        raise FustalError(f"{source}: no 'database' object (not the ActivityNet schema)")
    for vid, entry in database.items():
        if not isinstance(entry, Mapping):
            raise FustalError(f"{source}: video {vid}: entry is not an object")
    return database


def _collect_labels(database: Mapping[str, Any], source: str) -> list[str]:
    names: set[str] = set()
    for vid, entry in database.items():
        for ann in entry.get("annotations", []) or []:
            if not isinstance(ann, Mapping) or "label" not in ann:
                raise FustalError(f"{source}: video {vid}: annotation without a 'label'")
            names.add(str(ann["label"]))
    return sorted(names - AMBIGUOUS_LABELS)


def _optional_float(value: Any, where: str) -> float | None:
    return None if value is None else _as_float(value, where)


def _subsets(
    database: Mapping[str, Any], split_files: Mapping[str, str | Path] | None, source: str
) -> list[tuple[str, str]]:
    """``(video, subset)`` in dataset order: the database's own, or the split files' (id a line)."""
    if not split_files:
        return [(vid, str(entry.get("subset", ""))) for vid, entry in database.items()]
    listed = []
    for subset, split in split_files.items():
        path = Path(split)
        if not path.is_file():
            raise FustalError(f"split file not found: {path}")
        for vid in filter(None, [line.strip() for line in path.read_text().splitlines()]):
            if vid not in database:
                raise FustalError(f"{split}: video {vid} is not in the annotation file {source}")
            listed.append((vid, subset))
    return listed


def _segments(
    entry: Mapping[str, Any], index: Mapping[str, int], where: str
) -> tuple[np.ndarray, np.ndarray]:
    """The checked ``segments [M, 2]`` (seconds) and class indices ``[M]`` of an entry's
    annotations, ambiguous ones left out."""
    annotations = entry.get("annotations", []) or []
    if not isinstance(annotations, list):
        raise FustalError(f"{where}: 'annotations' is not a list")
    segs: list[tuple[float, float]] = []
    labels: list[int] = []
    for ann in annotations:
        if not isinstance(ann, Mapping) or "label" not in ann:
            raise FustalError(f"{where}: annotation without a 'label'")
        label = str(ann["label"])
        if label in AMBIGUOUS_LABELS:
            continue
        if label not in index:
            raise FustalError(f"{where}: class '{label}' is not in the class list")
        seg = ann.get("segment")
        if not isinstance(seg, (list, tuple)) or len(seg) != 2:
            raise FustalError(f"{where}: segment must be [start, end], got {seg!r}")
        start = _as_float(seg[0], f"{where}: segment start")
        end = _as_float(seg[1], f"{where}: segment end")
        if start < 0:
            raise FustalError(f"{where}: segment [{start}, {end}] has a negative start")
        if end < start:
            raise FustalError(f"{where}: segment [{start}, {end}] ends before it starts")
        segs.append((start, end))
        labels.append(index[label])
    return np.asarray(segs, dtype=np.float64).reshape(-1, 2), np.asarray(labels, dtype=np.int64)


def load_annotations(
    path: str | Path,
    fmt: str = "auto",
    split_files: Mapping[str, str | Path] | None = None,
    classes: Sequence[str] | None = None,
    clip_to_duration: bool = True,
    video_table: str | Path | None = None,
) -> Annotations:
    """Load an annotation file.

    Args:
        path: ActivityNet-schema JSON (``thumos14.json``, ActivityNet v1.3), WTAL ``gt.json`` or
            a CSV ``video,subset,label,start,end``.
        fmt: ``"activitynet"``, ``"wtal"``, ``"csv"`` or ``"auto"`` (CSV for a ``.csv`` file,
            else WTAL when no video has a duration).
        split_files: optional ``{subset: file}``; each file lists the video ids of that subset
            (one per line) and overrides the subset stored in the JSON.
        classes: class names in index order; default: all labels in the file, alphabetical.
            A label outside the list is an error naming the video.
        clip_to_duration: clip segments that end after the video's duration (counted, logged).
        video_table: the video table ``video,duration,fps`` of CSV annotations (not read for
            JSON files).
    """
    path = Path(path)
    source = str(path)
    database = read_database(path, fmt, Path(video_table) if video_table else None)
    subsets = _subsets(database, split_files, source)
    class_list = list(classes) if classes is not None else _collect_labels(database, source)
    index = {name: i for i, name in enumerate(class_list)}
    videos: dict[str, Video] = {}
    clipped = 0
    for vid, subset in subsets:
        entry, where = database[vid], f"{source}: video {vid}"
        duration = _optional_float(entry.get("duration"), f"{where}: duration")
        fps = _optional_float(entry.get("fps"), f"{where}: fps")
        if duration is not None and duration <= 0:
            raise FustalError(f"{where}: duration must be positive, got {duration}")
        segments, labels = _segments(entry, index, where)
        if clip_to_duration and duration is not None:
            # kept even when it starts after the end (zero length), as in the official evaluation
            over = segments[:, 1] > duration
            segments[over] = np.minimum(segments[over], duration)
            clipped += int(over.sum())
        videos[vid] = Video(vid, subset, duration, fps, segments, labels)
    if clipped:
        log.warning("%s: clipped %d segments that end after the video's duration", source, clipped)
    names = sorted({v.subset for v in videos.values()})
    return Annotations(class_list, videos, source, clipped, names)
