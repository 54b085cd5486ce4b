"""Timeline of one video on a shared time axis in seconds: the generator's CAS (heatmap) and
actionness, then one row of segments per track (ground truth, pseudo labels, detections)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from fustal.pseudo.proposals import minmax_normalize
from fustal.viz.save import new_figure, save_png


@dataclass(frozen=True)
class Track:
    """One row of segments: ``segments [M, 2]`` seconds, ``labels [M]`` class indices and
    ``scores [M]`` (None for ground truth, drawn opaque; else opacity follows the score)."""

    name: str
    segments: np.ndarray
    labels: np.ndarray
    scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", np.asarray(self.segments, np.float64).reshape(-1, 2))
        object.__setattr__(self, "labels", np.asarray(self.labels, np.int64).reshape(-1))
        if self.scores is not None:
            object.__setattr__(self, "scores", np.asarray(self.scores, np.float64).reshape(-1))


def shown_classes(
    tracks: Sequence[Track], limit: int = 8, fallback: np.ndarray | None = None
) -> np.ndarray:
    """Classes that get a lane, at most ``limit``, in class-index order (the same order in
    every picture): chosen are those of score-less tracks (ground truth), then the others by
    their best score in any track. Without any segment, the class with the largest ``fallback``
    value (e.g. the CAS maximum per class), if given."""
    truth = [t.labels for t in tracks if t.scores is None]
    first = np.unique(np.concatenate(truth)) if truth else np.zeros(0, np.int64)
    scored = [t for t in tracks if t.scores is not None]
    labels = np.concatenate([t.labels for t in scored]) if scored else np.zeros(0, np.int64)
    scores = np.concatenate([t.scores for t in scored]) if scored else np.zeros(0)
    by_score = labels[np.argsort(-scores, kind="stable")]
    _, first_seen = np.unique(by_score, return_index=True)
    ranked = by_score[np.sort(first_seen)]
    order = np.concatenate([first, ranked[~np.isin(ranked, first)]]).astype(np.int64)
    if order.size == 0 and fallback is not None and np.size(fallback):
        order = np.array([int(np.argmax(fallback))])
    return np.sort(order[:limit])


def class_color(label: int) -> tuple[float, float, float]:
    """A fixed color per class index: the 10 dark ``tab20`` hues, then the 10 light ones."""
    r, g, b, _ = colormaps["tab20"]((2 * label) % 20 + (label // 10) % 2)
    return r, g, b


def _lanes(ax: Axes, names: Sequence[str]) -> None:
    ax.set_yticks(np.arange(len(names)), list(names), fontsize=8)
    ax.set_ylim(len(names) - 0.5, -0.5)


SCORE_CMAP = "plasma"


def _draw_track(
    ax: Axes, track: Track, shown: np.ndarray, names: Sequence[str], max_segments: int
) -> None:
    lane = np.full(max(int(track.labels.max(initial=-1)), int(shown.max(initial=-1))) + 1, -1)
    lane[shown] = np.arange(shown.size)
    in_lanes = np.flatnonzero(lane[track.labels] >= 0)
    keep = in_lanes
    if track.scores is not None:
        keep = keep[np.argsort(-track.scores[keep], kind="stable")[:max_segments][::-1]]
    segs, labels = track.segments[keep], track.labels[keep]
    rgb = [class_color(int(c)) for c in labels]
    if track.scores is None:  # ground truth: the class colour
        fill: list[tuple[float, ...]] = [(*c, 0.9) for c in rgb]
    else:  # detections: the score on one colour scale for every picture (0 to 1)
        scores = np.clip(track.scores[keep], 0.0, 1.0)
        fill = [tuple(colormaps[SCORE_CMAP](float(s))) for s in scores]
    if labels.size:
        ax.barh(
            lane[labels],
            segs[:, 1] - segs[:, 0],
            left=segs[:, 0],
            height=0.8,
            color=fill,
            edgecolor=rgb,
            linewidth=0.8,
        )
    title = f"{track.name}: {track.labels.size} segments"
    if in_lanes.size < track.labels.size:
        title += f", {track.labels.size - in_lanes.size} of other classes hidden"
    if keep.size < in_lanes.size:
        title += f", top {keep.size} by score shown"
    ax.set_title(title, loc="left", fontsize=9)
    _lanes(ax, names)


def _draw_cas(
    ax: Axes, cas: np.ndarray, shown: np.ndarray, names: Sequence[str], step_s: float
) -> None:
    top = max(float(cas.max(initial=0.0)), 1e-12)
    heat = (np.clip(cas[:, shown] / top, 0.0, 1.0) if cas.size else np.zeros((0, len(shown)))).T
    box = (0.0, len(cas) * step_s, len(names) - 0.5, -0.5)
    ax.imshow(
        heat, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0.0, vmax=1.0, extent=box
    )
    ax.set_title("CAS (divided by its maximum over all classes)", loc="left", fontsize=9)
    _lanes(ax, names)


def _draw_actionness(ax: Axes, actionness: np.ndarray, step_s: float) -> None:
    act = np.asarray(actionness, np.float64).reshape(-1, 1)
    values = minmax_normalize(act)[:, 0] if act.size else np.zeros(0)
    ax.stairs(values, np.arange(values.size + 1) * step_s, color="black", lw=1)
    ax.set_ylim(0.0, 1.05)
    ax.set_title("actionness (min-max normalized)", loc="left", fontsize=9)


def _score_bar(fig: Figure, axes: list[Axes], score_threshold: float | None) -> None:
    bar = fig.colorbar(
        ScalarMappable(Normalize(0.0, 1.0), SCORE_CMAP), ax=axes, fraction=0.02, pad=0.01
    )
    label = "score"
    if score_threshold is not None:
        bar.ax.axhline(score_threshold, color="white", linewidth=2)
        label = f"score (white line: threshold {score_threshold:g})"
    bar.set_label(label, fontsize=8)


def plot_timeline(
    path: str | os.PathLike,
    title: str,
    class_names: Sequence[str],
    tracks: Sequence[Track],
    cas: np.ndarray | None = None,
    actionness: np.ndarray | None = None,
    seconds_per_step: float | None = None,
    duration: float | None = None,
    max_segments: int = 25,
    score_threshold: float | None = None,
) -> Path:
    """Draw one video's timeline and write it as a PNG at ``path``.

    Args:
        path: output file.
        title: figure title (e.g. the video id).
        class_names: names of all classes, by index.
        tracks: segment rows, drawn top to bottom below the CAS and actionness.
        cas: ``[T, C]`` class activation sequence, shown for the classes that get a lane (see
            :func:`shown_classes`) divided by its maximum over all classes, so that classes the
            generator does not see in the video stay dark.
        actionness: ``[T]``, shown min-max normalized.
        seconds_per_step: duration of one CAS step (step ``t`` covers ``[t, t + 1) * s``);
            required with ``cas`` or ``actionness``.
        duration: video length in seconds (else the end of the last step or segment).
        max_segments: most segments of a scored track (the highest scores, the best drawn on
            top); their colour is the score (a colour bar on the right), the outline the class.
        score_threshold: marked on the colour bar (e.g. the filter's and teacher's 0.4).
    """
    if (cas is not None or actionness is not None) and not seconds_per_step:
        raise ValueError("plot_timeline: cas and actionness need seconds_per_step")
    step_s = float(seconds_per_step or 0.0)
    cas = None if cas is None else np.asarray(cas, np.float64)
    fallback = None if cas is None else cas.max(axis=0, initial=0.0)
    shown = shown_classes(tracks, fallback=fallback)
    names = [class_names[c] for c in shown]
    ends = [t.segments[:, 1].max(initial=0.0) for t in tracks]
    ends += [len(series) * step_s for series in (cas, actionness) if series is not None]
    end = duration if duration else max(ends, default=0.0) or 1.0

    lane_h = 0.25 * max(len(names), 1)
    heights: dict[str, float] = {"cas": lane_h + 0.5} if cas is not None else {}
    if actionness is not None:
        heights["actionness"] = 0.9
    heights.update({f"track{i}": lane_h + 0.45 for i in range(len(tracks))})
    if not heights:
        heights["empty"] = 0.9
    fig = new_figure(12.0, sum(heights.values()) + 1.0)
    ratios = {"height_ratios": list(heights.values())}
    axes = fig.subplots(len(heights), 1, sharex=True, squeeze=False, gridspec_kw=ratios)[:, 0]
    panels = dict(zip(heights, axes, strict=True))
    if cas is not None:
        _draw_cas(panels["cas"], cas, shown, names, step_s)
    if actionness is not None:
        _draw_actionness(panels["actionness"], actionness, step_s)
    for i, track in enumerate(tracks):
        _draw_track(panels[f"track{i}"], track, shown, names, max_segments)
    scored = [panels[f"track{i}"] for i, t in enumerate(tracks) if t.scores is not None]
    if scored:
        _score_bar(fig, scored, score_threshold)
    handles = [Patch(color=class_color(int(c)), label=class_names[c]) for c in shown]
    if handles:
        fig.legend(handles=handles, loc="upper right", ncol=min(len(handles), 4), fontsize=7)
    axes[-1].set_xlim(0.0, end)
    axes[-1].set_xlabel("time (s)")
    fig.suptitle(title, x=0.02, ha="left")
    return save_png(fig, path)
