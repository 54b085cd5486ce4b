"""Detections per video, ActivityNet results files, and conversions to flat :class:`Detections`.

In memory, fustal passes detections between stages as one representation,
:data:`VideoDetections`: ``{video_id: [K, 4] float64 rows (class_index, score, start_s, end_s)}``
(pseudo labels, test detections, filtered pseudo labels alike). A results file, the only form
written to disk, is ``{"results": {vid: [{"label": name, "score": s, "segment": [start, end]}]}}``
(extra top-level keys such as ``"version"`` or ``"external_data"`` are ignored); a top-level
object without ``"results"`` is read as the ``{vid: [...]}`` mapping itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fustal.data.annotations import Video
from fustal.errors import FustalError
from fustal.io import read_json, write_json
from fustal.metrics.detection import Detections, detection_map

RESULT_KEYS = ("label", "score", "segment")
VideoDetections = dict[str, np.ndarray]


def _check_entries(results: Any, where: str) -> None:
    """Raise a :class:`FustalError` naming the video when ``results`` breaks the schema."""
    if not isinstance(results, Mapping):
        raise FustalError(f"{where}: 'results' must be an object mapping video ids to lists")
    for vid, entries in results.items():
        if not isinstance(entries, list):
            raise FustalError(f"{where}: video {vid}: expected a list of detections")
        for entry in entries:
            if not isinstance(entry, Mapping):
                raise FustalError(f"{where}: video {vid}: detection is not an object: {entry!r}")
            missing = [k for k in RESULT_KEYS if k not in entry]
            if missing:
                raise FustalError(f"{where}: video {vid}: detection without {', '.join(missing)}")
            seg = entry["segment"]
            if not isinstance(seg, (list, tuple)) or len(seg) != 2:
                raise FustalError(f"{where}: video {vid}: segment must be [start, end]: {seg!r}")


def read_results(path: str | os.PathLike) -> dict[str, list[dict]]:
    """Read an ActivityNet results file -> ``{video_id: [detection dicts]}``.

    Raises :class:`FustalError` for a missing file, invalid JSON or a schema violation.
    """
    data = read_json(path, "results file")
    if not isinstance(data, Mapping):
        raise FustalError(f"{path}: expected a JSON object with a 'results' key")
    results = data.get("results", data)
    _check_entries(results, str(path))
    return {str(vid): list(entries) for vid, entries in results.items()}


def _as_floats(values: list[Any], vids: list[str], what: str) -> np.ndarray:
    """Convert numbers or numeric strings to float64, naming the first bad video on failure."""
    try:
        out = np.asarray(values, dtype=np.float64)
        if np.isfinite(out).all():
            return out
    except (TypeError, ValueError):
        pass
    for value, vid in zip(values, vids, strict=True):
        try:
            ok = bool(np.isfinite(np.asarray(value, dtype=np.float64)).all())
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise FustalError(f"results: video {vid}: {what} is not a finite number: {value!r}")
    raise FustalError(f"results: {what} values are not numbers")


def results_to_detections(
    results: Mapping[str, Any],
    classes: list[str],
    video_ids: list[str],
) -> Detections:
    """Flatten ``{vid: [{"label", "score", "segment"}]}`` (as from :func:`read_results`; a
    ``{"results": ...}`` wrapper is unwrapped) into :class:`Detections` indexed by ``classes``
    and ``video_ids``: detections with another label are dropped, those on other videos get video
    index -1 (the evaluation counts them as false positives)."""
    if isinstance(results, Mapping) and isinstance(results.get("results"), Mapping):
        results = results["results"]
    _check_entries(results, "results")
    class_index = {name: i for i, name in enumerate(classes)}
    video_index = {vid: i for i, vid in enumerate(video_ids)}
    vids, labels, videos, scores, segments = [], [], [], [], []
    for vid, entries in results.items():
        v = video_index.get(str(vid), -1)
        for entry in entries:
            label = entry["label"]
            c = class_index.get(label) if isinstance(label, str) else None
            if c is None:
                continue
            vids.append(str(vid))
            videos.append(v)
            labels.append(c)
            scores.append(entry["score"])
            segments.append(entry["segment"])
    segment, score = _as_floats(segments, vids, "segment"), _as_floats(scores, vids, "score")
    return Detections(np.asarray(videos, np.int64), np.asarray(labels, np.int64), segment, score)


def gt_to_detections(videos: Sequence[Video]) -> tuple[Detections, list[str]]:
    """Ground-truth :class:`Detections` of ``videos`` and the video id list they index into."""
    video_ids = [v.id for v in videos]
    if len(set(video_ids)) != len(video_ids):
        raise FustalError("ground truth: duplicate video ids")
    counts = [v.num_segments for v in videos]
    segments = [np.asarray(v.segments, dtype=np.float64).reshape(-1, 2) for v in videos]
    labels = [np.asarray(v.labels, dtype=np.int64).reshape(-1) for v in videos]
    gt = Detections(
        video=np.repeat(np.arange(len(videos), dtype=np.int64), counts),
        label=np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64),
        segment=np.concatenate(segments) if segments else np.zeros((0, 2)),
    )
    return gt, video_ids


def row_entries(rows: np.ndarray, classes: list[str], vid: str) -> list[dict]:
    """One video's ``[K, 4]`` rows (of :data:`VideoDetections`) -> ``[{"label", "score",
    "segment"}]``; rows that are not ``[K, 4]`` or name no class are a :class:`FustalError`
    naming ``vid``."""
    rows = np.asarray(rows, dtype=np.float64)
    if rows.size == 0:
        return []
    if rows.ndim != 2 or rows.shape[1] != 4:
        raise FustalError(f"proposals: video {vid}: expected [K, 4] rows, got {rows.shape}")
    cls = rows[:, 0].astype(np.int64)
    if (cls != rows[:, 0]).any() or (cls < 0).any() or (cls >= len(classes)).any():
        raise FustalError(
            f"proposals: video {vid}: class index outside [0, {len(classes)}) or not integral"
        )
    return [
        {"label": classes[c], "score": score, "segment": [start, end]}
        for c, (score, start, end) in zip(cls.tolist(), rows[:, 1:].tolist(), strict=True)
    ]


def rows_to_results(per_video: Mapping[str, np.ndarray], classes: list[str]) -> dict:
    """:data:`VideoDetections` -> ``{"results": {vid: [{"label", "score", "segment"}]}}``."""
    return {
        "results": {str(vid): row_entries(rows, classes, vid) for vid, rows in per_video.items()}
    }


def read_rows(path: str | os.PathLike, classes: list[str], where: str) -> VideoDetections:
    """:func:`results_to_rows` of the results file ``path`` (its errors name ``where``)."""
    return results_to_rows(read_results(path), classes, where)


def write_results(
    path: str | os.PathLike, per_video: Mapping[str, np.ndarray], classes: list[str]
) -> dict:
    """Write :func:`rows_to_results` of ``per_video`` to the results file ``path`` on one line
    (it holds every detection, and ``json`` indents in pure Python, several times slower than
    its compact encoder); returns what it wrote."""
    results = rows_to_results(per_video, classes)
    write_json(path, results, indent=None)
    return results


def results_to_rows(
    results: Mapping[str, Sequence[Mapping[str, Any]]], classes: list[str], where: str
) -> VideoDetections:
    """A results mapping ``{vid: [{"label", "score", "segment"}]}`` -> :data:`VideoDetections`,
    checked: every label in ``classes``, scores and segments finite numbers, no segment ending
    before it starts. A violation is a :class:`FustalError` naming ``where`` and the video."""
    _check_entries(results, where)
    index = {name: i for i, name in enumerate(classes)}
    out: VideoDetections = {}
    for vid, entries in results.items():
        rows = np.zeros((len(entries), 4))
        for i, entry in enumerate(entries):
            label = entry["label"]
            if not isinstance(label, str) or label not in index:
                raise FustalError(f"{where}: video {vid}: unknown class {label!r}")
            rows[i, 0] = index[label]
            rows[i, 1:2] = _as_floats([entry["score"]], [str(vid)], "score")
            rows[i, 2:4] = _as_floats([entry["segment"]], [str(vid)], "segment").reshape(2)
            if rows[i, 3] < rows[i, 2]:
                raise FustalError(f"{where}: video {vid}: segment ends before it starts")
        out[str(vid)] = rows
    return out


def rows_to_detections(rows: Mapping[str, np.ndarray], video_ids: list[str]) -> Detections:
    """Flatten :data:`VideoDetections` into :class:`Detections` indexing ``video_ids``
    (detections on other videos get video index -1: false positives for the evaluation)."""
    index = {vid: i for i, vid in enumerate(video_ids)}
    parts = [np.asarray(r, np.float64).reshape(-1, 4) for r in rows.values()]
    flat = np.concatenate(parts) if parts else np.zeros((0, 4))
    videos = np.repeat([index.get(v, -1) for v in rows], [len(p) for p in parts])
    return Detections(video=videos, label=flat[:, 0], segment=flat[:, 2:4], score=flat[:, 1])


def count_rows(rows: Mapping[str, np.ndarray]) -> int:
    """Number of detections in :data:`VideoDetections`."""
    return int(sum(len(r) for r in rows.values()))


def score_rows(
    rows: Mapping[str, np.ndarray],
    videos: Sequence[Video],
    num_classes: int,
    tiou_thresholds: Sequence[float],
) -> dict[str, float]:
    """Detection mAP of per-video rows (:data:`~fustal.metrics.results.VideoDetections`) on
    ``videos``: ``{"mAP@t": ..., "avg": ...}``."""
    gt, video_ids = gt_to_detections(videos)
    return detection_map(gt, rows_to_detections(rows, video_ids), tiou_thresholds, num_classes)
