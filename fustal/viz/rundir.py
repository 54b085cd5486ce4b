"""The pictures of a run dir and the files they are drawn from, all under ``RUN_DIR/pictures/``:

- ``inputs.json``: ``{"classes": [...], "score_threshold": s, "videos": [{"id", "subset",
  "duration", "tracks": {name: [{"label", "segment"[, "score"]}]}}], "pseudo_label_pr":
  <pr_summary> | null}`` (tracks in drawing order; a track whose entries have no score is ground
  truth);
- ``cas.npz`` (optional): the generator's CAS, actionness and seconds per step of those videos;
- ``timeline_<video>.png`` per video and ``pseudo_label_pr.png``.

:func:`draw_run` redraws every picture from these files alone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from fustal.errors import FustalError
from fustal.io import read_json, write_json, write_with
from fustal.viz.pr import plot_precision_recall
from fustal.viz.timeline import Track, plot_timeline

PICTURES = "pictures"
INPUTS = "inputs.json"
CAS = "cas.npz"
PR_PNG = "pseudo_label_pr.png"


def timeline_name(video_id: str) -> str:
    """``timeline_<video>.png`` with characters other than ``[A-Za-z0-9._-]`` replaced."""
    return f"timeline_{re.sub(r'[^A-Za-z0-9._-]', '_', video_id)}.png"


def segment_entries(
    segments: np.ndarray, labels: np.ndarray, classes: Sequence[str]
) -> list[dict[str, Any]]:
    """Ground-truth segments ``[M, 2]`` and class indices ``[M]`` as ``{"label", "segment"}``."""
    return [
        {"label": classes[int(c)], "segment": [float(s), float(e)]}
        for (s, e), c in zip(np.asarray(segments).reshape(-1, 2), labels, strict=True)
    ]


def entries_to_track(name: str, entries: Sequence[Mapping], classes: Sequence[str]) -> Track:
    """``[{"label", "segment"[, "score"]}]`` -> :class:`Track` (scores only if every entry
    has one)."""
    index = {c: i for i, c in enumerate(classes)}
    unknown = [e["label"] for e in entries if e["label"] not in index]
    if unknown:
        raise FustalError(f"pictures: track '{name}': unknown class '{unknown[0]}'")
    scored = bool(entries) and all("score" in e for e in entries)
    return Track(
        name,
        np.array([e["segment"] for e in entries], np.float64).reshape(-1, 2),
        np.array([index[e["label"]] for e in entries], np.int64),
        np.array([e["score"] for e in entries], np.float64) if scored else None,
    )


def write_cas(path: str | os.PathLike, per_video: Mapping[str, Mapping[str, Any]]) -> None:
    """Save ``{vid: {"cas" [T, C], "actionness" [T], "seconds_per_step"}}`` atomically."""
    arrays: dict[str, np.ndarray] = {"video_ids": np.array(list(per_video), dtype=str)}
    for i, item in enumerate(per_video.values()):
        arrays[f"cas_{i}"] = np.asarray(item["cas"], np.float32)
        arrays[f"actionness_{i}"] = np.asarray(item["actionness"], np.float32)
        arrays[f"seconds_per_step_{i}"] = np.asarray(float(item["seconds_per_step"]))
    write_with(path, lambda tmp: np.savez_compressed(tmp, **cast(dict[str, Any], arrays)))


def read_cas(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Inverse of :func:`write_cas`."""
    with np.load(path, allow_pickle=False) as data:
        return {
            str(vid): {
                "cas": data[f"cas_{i}"],
                "actionness": data[f"actionness_{i}"],
                "seconds_per_step": float(data[f"seconds_per_step_{i}"]),
            }
            for i, vid in enumerate(data["video_ids"])
        }


def write_inputs(
    run_dir: str | os.PathLike,
    inputs: Mapping[str, Any],
    cas: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Write ``inputs.json`` (and ``cas.npz`` when given, else remove a stale one)."""
    folder = Path(run_dir) / PICTURES
    write_json(folder / INPUTS, inputs)
    if cas:
        write_cas(folder / CAS, cas)
    else:
        (folder / CAS).unlink(missing_ok=True)


def draw_run(run_dir: str | os.PathLike) -> list[Path]:
    """Draw every picture of a run dir from its ``pictures/`` inputs (removing pictures of an
    earlier run into the same dir that these inputs do not have); return the PNG paths."""
    folder = Path(run_dir) / PICTURES
    inputs = read_json(folder / INPUTS, "picture inputs")
    classes = list(inputs["classes"])
    cas = read_cas(folder / CAS) if (folder / CAS).is_file() else {}
    paths = []
    for video in inputs["videos"]:
        vid = str(video["id"])
        tracks = [entries_to_track(n, e, classes) for n, e in video["tracks"].items()]
        gen = cas.get(vid, {})
        paths.append(
            plot_timeline(
                folder / timeline_name(vid),
                vid,
                classes,
                tracks,
                cas=gen.get("cas"),
                actionness=gen.get("actionness"),
                seconds_per_step=gen.get("seconds_per_step"),
                duration=video.get("duration"),
                score_threshold=inputs.get("score_threshold"),
            )
        )
    pr = inputs.get("pseudo_label_pr")
    if pr and pr["curves"]:
        curves = {n: (c["precision"], c["recall"]) for n, c in pr["curves"].items()}
        counts = {n: c["count"] for n, c in pr["curves"].items()}
        title = f"pseudo labels vs {pr['num_gt']} ground-truth segments (training videos)"
        paths.append(plot_precision_recall(folder / PR_PNG, pr["tiou"], curves, counts, title))
    stale = {*folder.glob("timeline_*.png"), folder / PR_PNG} - set(paths)
    for path in stale:
        path.unlink(missing_ok=True)
    return paths
