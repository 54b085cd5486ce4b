"""Deterministic synthetic THUMOS-like or ActivityNet-like dataset, in the real on-disk layouts
(``layout="thumos"``: both THUMOS'14 layouts of METHOD.md section 1; ``layout="activitynet"``:
ActivityNet v1.3 with resized features), so the real loaders read it.

Every video has one latent timeline sampled every ``timeline_step`` seconds; a feature step of
any layout is the exact mean of that piecewise-constant timeline over its window, so the layouts
agree in time. The timeline sums per-instance class signals (with under- and over-covering
envelopes), a weak video-level class signal, class-agnostic motion, background distractors, a
per-video scene offset, AR(1) and white noise. ``docs/synthetic.md`` states the model with every
parameter of :class:`SyntheticConfig`, the files written and the layout presets.

Everything is deterministic: the same config gives byte-identical files. The fields only the
activitynet layout reads (:data:`ACTIVITYNET_FIELDS`) are left out of a thumos dataset's
identity, so its hash and files are those of the versions before the layout existed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from fustal.errors import FustalError, exit_on_error
from fustal.io import atomic_open, read_json, write_json, write_npy

FORMAT_VERSION = 1
MARKER_NAME = "synthetic.json"
HASH_LENGTH = 12
STEP_EPS = 1e-6
TRAIN, TEST = "train", "test"
THUMOS, ACTIVITYNET = "thumos", "activitynet"
LAYOUTS = (THUMOS, ACTIVITYNET)
ANNOTATION_SUBSETS = {
    THUMOS: {TRAIN: "validation", TEST: "test"},
    ACTIVITYNET: {TRAIN: "training", TEST: "validation"},
}
VIDEO_PREFIXES = {
    THUMOS: {TRAIN: "video_validation_", TEST: "video_test_"},
    ACTIVITYNET: {TRAIN: "training_", TEST: "validation_"},
}
ANNOTATION_FILES = {THUMOS: "thumos14.json", ACTIVITYNET: "activitynet13.json"}
# where conf/features/resized.yaml reads the activitynet layout's features
RESIZED_PATH = "features/v_{video}.npy"
# fields only the activitynet layout reads: left out of a thumos dataset's identity
ACTIVITYNET_FIELDS = (
    "layout",
    "resized_steps",
    "second_action_prob",
    "action_coverage_median",
    "action_coverage_sigma",
)
# defaults that differ per layout (SyntheticConfig.for_layout, the --layout option)
LAYOUT_PRESETS: dict[str, dict[str, Any]] = {
    THUMOS: {},
    ACTIVITYNET: {"num_classes": 20, "train_videos": 200, "test_videos": 50, "max_duration": 120.0},
}
SPLIT_STREAMS = {TRAIN: 1, TEST: 2}
PLAN_STREAM, RENDER_STREAM = 0, 1


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the synthetic dataset (``docs/synthetic.md`` states the model)."""

    num_classes: int = 5
    train_videos: int = 160
    test_videos: int = 40
    min_duration: float = 30.0
    max_duration: float = 70.0
    feature_dim: int = 64
    seed: int = 0
    annotation_file: str | None = None
    # "thumos" or "activitynet": which real dataset's files and video composition
    layout: str = THUMOS
    # time grid and the two feature layouts
    timeline_step: float = 0.04
    snippet_frames: int = 16
    overlap_stride_frames: int = 4
    nonoverlap_fps: float = 25.0
    fps_choices: tuple[float, ...] = (30.0, 29.97, 25.0, 24.0)
    fps_weights: tuple[float, ...] = (0.7, 0.1, 0.1, 0.1)
    # video composition
    class_count_weights: tuple[float, ...] = (0.8, 0.15, 0.05)
    instance_rate: float = 0.05
    action_length_median: float = 4.0
    action_length_sigma: float = 0.5
    min_action_length: float = 1.0
    max_action_length: float = 15.0
    min_gap: float = 1.0
    # class signal
    class_strength: float = 1.0
    amplitude_spread: float = 0.25
    intra_class_spread: float = 0.5
    prototype_rgb_share: float = 0.6
    edge_level: float = 0.3
    edge_fraction: float = 0.25
    context_level: float = 0.3
    context_decay: float = 1.5
    context_span: float = 4.0
    presence_level: float = 0.2
    # class-agnostic motion
    motion_strength: float = 0.8
    motion_flow_share: float = 0.9
    # background distractors
    distractor_rate: float = 0.04
    distractor_length_median: float = 3.0
    distractor_strength: float = 0.8
    distractors_per_class: int = 2
    confuser_prob: float = 0.3
    confuser_similarity: float = 0.6
    distractor_motion_prob: float = 0.3
    # nuisance
    scene_std: float = 0.2
    ar_std: float = 0.35
    ar_time_constant: float = 1.0
    white_std: float = 1.0
    # activitynet layout: steps per video, second-action probability, action coverage
    resized_steps: int = 128
    second_action_prob: float = 0.25
    action_coverage_median: float = 0.5
    action_coverage_sigma: float = 0.6

    @classmethod
    def for_layout(cls, layout: str, **overrides: Any) -> SyntheticConfig:
        """A config of ``layout`` with that layout's preset sizes, then ``overrides``."""
        return cls(**{**LAYOUT_PRESETS.get(layout, {}), **overrides, "layout": layout})

    def __post_init__(self) -> None:
        for field in fields(self):
            if isinstance(field.default, tuple):
                value = getattr(self, field.name)
                try:
                    object.__setattr__(self, field.name, tuple(float(x) for x in value))
                except (TypeError, ValueError):
                    raise FustalError(f"SyntheticConfig: {field.name} must be numbers") from None
        class_weights = self.class_count_weights
        checks = [
            (self.num_classes >= 1, "num_classes must be >= 1"),
            (self.train_videos >= 1 and self.test_videos >= 1, "need >= 1 train and test video"),
            (self.feature_dim >= 2 and self.feature_dim % 2 == 0, "feature_dim must be even >= 2"),
            (0 < self.min_duration <= self.max_duration, "need 0 < min_duration <= max_duration"),
            (self.timeline_step > 0, "timeline_step must be > 0"),
            (self.snippet_frames >= 1 and self.overlap_stride_frames >= 1, "frames must be >= 1"),
            (self.nonoverlap_fps > 0, "nonoverlap_fps must be > 0"),
            (len(self.fps_choices) == len(self.fps_weights) >= 1, "fps_weights != fps_choices"),
            (min(self.fps_choices, default=0) > 0, "fps_choices must be > 0"),
            (min(self.fps_weights, default=0) >= 0 < sum(self.fps_weights), "bad fps_weights"),
            (len(class_weights) >= 1, "class_count_weights must not be empty"),
            (min(class_weights, default=0) >= 0 < sum(class_weights), "bad weights"),
            (0 < self.min_action_length <= self.max_action_length, "bad action length range"),
            (self.action_length_median > 0 and self.distractor_length_median > 0, "bad medians"),
            (self.min_gap >= 0 and self.instance_rate >= 0, "min_gap/instance_rate must be >= 0"),
            (0 <= self.prototype_rgb_share <= 1, "prototype_rgb_share must be in [0, 1]"),
            (0 <= self.motion_flow_share <= 1, "motion_flow_share must be in [0, 1]"),
            (0 <= self.confuser_similarity <= 1, "confuser_similarity must be in [0, 1]"),
            (0 < self.edge_fraction <= 0.5, "edge_fraction must be in (0, 0.5]"),
            (self.context_decay > 0 and self.ar_time_constant > 0, "time constants must be > 0"),
            (self.distractors_per_class >= 1, "distractors_per_class must be >= 1"),
            (self.layout in LAYOUTS, f"layout must be one of {', '.join(LAYOUTS)}"),
            (self.resized_steps >= 1, "resized_steps must be >= 1"),
            (0 <= self.second_action_prob <= 1, "second_action_prob must be in [0, 1]"),
            (0 < self.action_coverage_median <= 1, "action_coverage_median must be in (0, 1]"),
            (self.action_coverage_sigma >= 0, "action_coverage_sigma must be >= 0"),
        ]
        for ok, what in checks:
            if not ok:
                raise FustalError(f"SyntheticConfig: {what}")
        if self.annotation_file is not None:
            return
        longest_window = self.snippet_frames / min(*self.fps_choices, self.nonoverlap_fps)
        two_actions = 2 * (self.min_action_length + self.min_gap) + self.min_gap
        if self.layout == THUMOS and self.min_duration < longest_window:
            raise FustalError("SyntheticConfig: min_duration shorter than one feature window")
        if self.layout == ACTIVITYNET and self.min_duration < two_actions:
            raise FustalError("SyntheticConfig: min_duration too short for two actions and gaps")


@dataclass(frozen=True)
class Directions:
    """Latent directions shared by all videos of one dataset."""

    prototypes: np.ndarray  # [C, D] unit class prototypes
    motion: np.ndarray  # [D] unit class-agnostic motion direction
    distractors: np.ndarray  # [K, D] unit background distractor directions


@dataclass(frozen=True)
class VideoPlan:
    """One video: id, split (``train``/``test``), position in the split, duration (s), fps and
    its action instances."""

    video_id: str
    split: str
    index: int
    duration: float
    fps: float
    segments: np.ndarray  # [N, 2] float64 seconds, rounded to 0.01
    labels: np.ndarray  # [N] int64 class indices


def synthetic_hash(cfg: SyntheticConfig) -> str:
    """Short hex hash of the parameters, the format version and the annotation file content: the
    generated dataset's folder name and annotation ``version`` (not a stage cache key)."""
    identity = json.dumps(_identity(cfg), sort_keys=True)
    return hashlib.sha256(identity.encode()).hexdigest()[:HASH_LENGTH]


def _identity(cfg: SyntheticConfig) -> dict[str, Any]:
    """JSON-ready description of everything that determines the generated files."""
    digest = None
    if cfg.annotation_file is not None:
        path = Path(cfg.annotation_file)
        if not path.is_file():
            raise FustalError(f"{path}: annotation file not found")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    params = json.loads(json.dumps(asdict(cfg)))
    if cfg.layout == THUMOS:
        params = {k: v for k, v in params.items() if k not in ACTIVITYNET_FIELDS}
    return {"format_version": FORMAT_VERSION, "params": params, "annotation_sha256": digest}


def _rng(seed: int, *stream: int) -> np.random.Generator:
    """PCG64 generator seeded from ``(seed, *stream)``."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *stream])))


def unit_directions(rng: np.random.Generator, count: int, dim: int) -> np.ndarray:
    """``[count, dim]`` unit vectors, orthonormal when ``count <= dim``."""
    gauss = rng.standard_normal((dim, max(count, 1)))
    if count <= dim:
        q, r = np.linalg.qr(gauss)
        return (q * np.sign(np.diag(r)))[:, :count].T
    return (gauss / np.linalg.norm(gauss, axis=0)).T[:count]


def split_halves(rgb: np.ndarray, flow: np.ndarray, rgb_share: float) -> np.ndarray:
    """Join unit rgb ``[N, D/2]`` and flow ``[N, D/2]`` parts into unit ``[N, D]`` vectors."""
    return np.concatenate([math.sqrt(rgb_share) * rgb, math.sqrt(1 - rgb_share) * flow], axis=1)


def make_directions(cfg: SyntheticConfig, num_classes: int) -> Directions:
    """The shared latent directions of a dataset with ``num_classes`` classes."""
    rng = _rng(cfg.seed, 0)
    half = cfg.feature_dim // 2
    prototypes = split_halves(
        unit_directions(rng, num_classes, half),
        unit_directions(rng, num_classes, half),
        cfg.prototype_rgb_share,
    )
    motion = split_halves(
        unit_directions(rng, 1, half), unit_directions(rng, 1, half), 1 - cfg.motion_flow_share
    )[0]
    distractors = unit_directions(rng, cfg.distractors_per_class * num_classes, cfg.feature_dim)
    return Directions(prototypes, motion, distractors)


def class_names(num_classes: int) -> list[str]:
    """``Class00``, ``Class01``, ... (alphabetical order equals index order)."""
    width = max(2, len(str(num_classes - 1)))
    return [f"Class{i:0{width}d}" for i in range(num_classes)]


def _layout_instances(
    rng: np.random.Generator, lengths: np.ndarray, duration: float, min_gap: float
) -> np.ndarray:
    """Place ``[N]`` lengths in order with random gaps >= ``min_gap``; ``[N', 2]`` segments,
    clipped to the video and rounded to 0.01 s.

    Instances that do not fit are dropped from the end of the list.
    """
    need = np.cumsum(lengths) + min_gap * (np.arange(lengths.size) + 2)
    keep = max(int(np.sum(need <= duration)), 1)
    lengths = lengths[:keep]
    spare = max(duration - lengths.sum() - min_gap * (keep + 1), 0.0)
    gaps = min_gap + spare * rng.dirichlet(np.ones(keep + 1))
    starts = np.cumsum(gaps[:keep]) + np.concatenate([[0.0], np.cumsum(lengths)[:-1]])
    return np.round(np.clip(np.stack([starts, starts + lengths], axis=1), 0.0, duration), 2)


def _draw_fps_duration(cfg: SyntheticConfig, rng: np.random.Generator) -> tuple[float, float]:
    """A video's fps (from ``fps_choices``) and duration (s, uniform, rounded to 0.01)."""
    fps = float(rng.choice(cfg.fps_choices, p=np.asarray(cfg.fps_weights) / sum(cfg.fps_weights)))
    return fps, round(float(rng.uniform(cfg.min_duration, cfg.max_duration)), 2)


def video_id(layout: str, split: str, index: int) -> str:
    """Id of video ``index`` of ``split``: ``video_test_0000001``, ``training_0000001``, ..."""
    return f"{VIDEO_PREFIXES[layout][split]}{index + 1:07d}"


def plan_video(cfg: SyntheticConfig, split: str, index: int) -> VideoPlan:
    """Draw fps, duration and action instances of synthetic THUMOS-like video ``index``."""
    rng = _rng(cfg.seed, SPLIT_STREAMS[split], index, PLAN_STREAM)
    fps, duration = _draw_fps_duration(cfg, rng)
    weights = np.asarray(cfg.class_count_weights) / sum(cfg.class_count_weights)
    n_present = min(int(rng.choice(weights.size, p=weights)) + 1, cfg.num_classes)
    first = index % cfg.num_classes
    others = rng.permutation(np.delete(np.arange(cfg.num_classes), first))[: n_present - 1]
    present = np.concatenate([[first], others]).astype(np.int64)
    count = n_present + int(rng.poisson(cfg.instance_rate * duration))
    lengths = np.clip(
        cfg.action_length_median * np.exp(cfg.action_length_sigma * rng.standard_normal(count)),
        cfg.min_action_length,
        min(cfg.max_action_length, duration / 2),
    )
    segments = _layout_instances(rng, lengths, duration, cfg.min_gap)
    labels = np.concatenate([present, rng.choice(present, size=count - n_present)])
    labels = rng.permutation(labels[: segments.shape[0]])
    return VideoPlan(
        video_id(cfg.layout, split, index), split, index, duration, fps, segments, labels
    )


def plan_activitynet_video(cfg: SyntheticConfig, split: str, index: int) -> VideoPlan:
    """Draw fps, duration and the 1-2 long same-class actions of ActivityNet-like video
    ``index`` of ``split``; together its segments ``[N, 2]`` cover a log-normal fraction of it."""
    rng = _rng(cfg.seed, SPLIT_STREAMS[split], index, PLAN_STREAM)
    fps, duration = _draw_fps_duration(cfg, rng)
    count = 1 + int(rng.uniform() < cfg.second_action_prob)
    coverage = cfg.action_coverage_median * math.exp(
        cfg.action_coverage_sigma * rng.standard_normal()
    )
    shortest = cfg.min_action_length * count
    total = min(max(coverage * duration, shortest), duration - cfg.min_gap * (count + 1))
    shares = rng.dirichlet(np.full(count, 2.0))
    lengths = cfg.min_action_length + (total - shortest) * shares
    segments = _layout_instances(rng, lengths, duration, cfg.min_gap)
    labels = np.full(segments.shape[0], index % cfg.num_classes, dtype=np.int64)
    return VideoPlan(
        video_id(cfg.layout, split, index), split, index, duration, fps, segments, labels
    )


def plans_from_annotations(cfg: SyntheticConfig) -> tuple[list[str], list[VideoPlan]]:
    """Class names and video plans taken from the real ActivityNet-schema ``annotation_file``."""
    path = Path(str(cfg.annotation_file))
    database = read_json(path, "annotation file").get("database")
    if not isinstance(database, dict):
        raise FustalError(f"{path}: no 'database' object")
    chosen: list[tuple[str, str, float, float | None, list[tuple[str, float, float]]]] = []
    subsets = ANNOTATION_SUBSETS[cfg.layout]
    for split, wanted in ((TRAIN, cfg.train_videos), (TEST, cfg.test_videos)):
        taken = 0
        for vid in sorted(database):
            entry = database[vid]
            if taken == wanted or str(entry.get("subset", "")).lower() != subsets[split]:
                continue
            try:
                duration = float(entry["duration"])
                fps = float(entry["fps"]) if entry.get("fps") is not None else None
                segs = [
                    (str(a["label"]), float(a["segment"][0]), float(a["segment"][1]))
                    for a in entry.get("annotations", [])
                ]
            except (KeyError, TypeError, ValueError, IndexError):
                raise FustalError(f"{path}: {vid}: malformed entry") from None
            segs = [
                (label, round(max(s, 0.0), 2), round(min(e, duration), 2)) for label, s, e in segs
            ]
            segs = [seg for seg in segs if seg[2] > seg[1]]
            if segs and duration > 0:
                chosen.append((vid, split, duration, fps, segs))
                taken += 1
        if taken < wanted:
            raise FustalError(
                f"{path}: only {taken} usable '{subsets[split]}' videos, {wanted} requested"
            )
    names = sorted({label for *_, segs in chosen for label, _, _ in segs})
    label_index = {name: i for i, name in enumerate(names)}
    plans: list[VideoPlan] = []
    for vid, split, duration, fps, segs in chosen:
        index = sum(plan.split == split for plan in plans)
        if fps is None:  # the fps that a generated video at this position draws
            rng = _rng(cfg.seed, SPLIT_STREAMS[split], index, PLAN_STREAM)
            fps = _draw_fps_duration(cfg, rng)[0]
        segments = np.array([[s, e] for _, s, e in segs], dtype=np.float64)
        labels = np.array([label_index[label] for label, _, _ in segs], dtype=np.int64)
        plans.append(VideoPlan(vid, split, index, duration, fps, segments, labels))
    return names, plans


def plan_dataset(cfg: SyntheticConfig) -> tuple[list[str], list[VideoPlan]]:
    """Class names and all video plans (train first, then test)."""
    if cfg.annotation_file is not None:
        return plans_from_annotations(cfg)
    plan = plan_video if cfg.layout == THUMOS else plan_activitynet_video
    plans = [plan(cfg, TRAIN, i) for i in range(cfg.train_videos)]
    plans += [plan(cfg, TEST, i) for i in range(cfg.test_videos)]
    return class_names(cfg.num_classes), plans


def action_envelopes(cfg: SyntheticConfig, t: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Class-signal envelope ``[N, L]`` of ``[N, 2]`` segments at times ``t [L]``.

    Inside: 1 in the middle, linear down to ``edge_level`` at the boundaries over the outer
    ``edge_fraction`` of the length. Outside: ``context_level * exp(-d / context_decay)`` for
    distance ``d <= context_span``, else 0.
    """
    start, end = segments[:, :1], segments[:, 1:]
    depth = np.minimum(t - start, end - t)
    ramp = np.maximum(cfg.edge_fraction * (end - start), np.finfo(np.float64).tiny)
    inside = cfg.edge_level + (1 - cfg.edge_level) * np.clip(depth / ramp, 0.0, 1.0)
    outside = cfg.context_level * np.exp(depth / cfg.context_decay) * (-depth <= cfg.context_span)
    return np.where(depth >= 0, inside, outside)


def interval_masks(t: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """``[N, L]`` float mask of ``t [L]`` inside each of the ``[N, 2]`` half-open segments."""
    return ((t >= segments[:, :1]) & (t < segments[:, 1:])).astype(np.float64)


def ar1_noise(rng: np.random.Generator, length: int, dim: int, phi: float) -> np.ndarray:
    """Stationary unit-variance AR(1) noise ``[length, dim]`` with coefficient ``phi``."""
    from scipy.signal import lfilter  # here: scipy.signal takes a second to import

    white = rng.standard_normal((length, dim))
    initial = phi * rng.standard_normal((1, dim))
    noise, _ = lfilter([math.sqrt(1 - phi**2)], [1.0, -phi], white, axis=0, zi=initial)
    return noise


def render_timeline(cfg: SyntheticConfig, plan: VideoPlan, directions: Directions) -> np.ndarray:
    """Latent timeline ``[L, D]`` float64 of one video, bin ``k`` covering ``[k dt, (k+1) dt)``."""
    rng = _rng(cfg.seed, SPLIT_STREAMS[plan.split], plan.index, RENDER_STREAM)
    dim, dt = cfg.feature_dim, cfg.timeline_step
    length = math.ceil(plan.duration / dt - STEP_EPS)
    t = (np.arange(length) + 0.5) * dt
    n = plan.labels.size
    spread = cfg.amplitude_spread
    amps = cfg.class_strength * rng.uniform(1 - spread, 1 + spread, n)
    jitter = rng.standard_normal((n, dim)) / math.sqrt(dim)
    inst_dirs = directions.prototypes[plan.labels] + cfg.intra_class_spread * jitter
    inst_dirs /= np.linalg.norm(inst_dirs, axis=1, keepdims=True)
    timeline = action_envelopes(cfg, t, plan.segments).T @ (amps[:, None] * inst_dirs)
    timeline += cfg.presence_level * directions.prototypes[np.unique(plan.labels)].sum(0)
    motion = (interval_masks(t, plan.segments) * amps[:, None]).max(0, initial=0.0)

    count = int(rng.poisson(cfg.distractor_rate * plan.duration))
    lengths = np.minimum(
        cfg.distractor_length_median * np.exp(cfg.action_length_sigma * rng.standard_normal(count)),
        plan.duration,
    )
    starts = rng.uniform(0.0, 1.0, count) * (plan.duration - lengths)
    intervals = np.stack([starts, starts + lengths], axis=1)
    d_amps = cfg.distractor_strength * rng.uniform(1 - spread, 1 + spread, count)
    bank = directions.distractors[rng.integers(0, directions.distractors.shape[0], count)]
    similar = directions.prototypes[rng.integers(0, directions.prototypes.shape[0], count)]
    other = bank - (bank * similar).sum(1, keepdims=True) * similar
    other /= np.maximum(np.linalg.norm(other, axis=1, keepdims=True), np.finfo(np.float64).tiny)
    sim = cfg.confuser_similarity
    confuser = sim * similar + math.sqrt(1 - sim**2) * other
    d_dirs = np.where((rng.uniform(size=count) < cfg.confuser_prob)[:, None], confuser, bank)
    d_masks = interval_masks(t, intervals) * d_amps[:, None]
    timeline += d_masks.T @ d_dirs
    with_motion = rng.uniform(size=count) < cfg.distractor_motion_prob
    motion = np.maximum(motion, (d_masks * with_motion[:, None]).max(0, initial=0.0))
    timeline += cfg.motion_strength * motion[:, None] * directions.motion

    timeline += cfg.scene_std * rng.standard_normal(dim)
    phi = math.exp(-dt / cfg.ar_time_constant)
    timeline += cfg.ar_std * ar1_noise(rng, length, dim, phi)
    timeline += cfg.white_std * rng.standard_normal((length, dim))
    return timeline


def window_means(
    timeline: np.ndarray, step: float, starts: np.ndarray, ends: np.ndarray
) -> np.ndarray:
    """Exact means ``[T, D]`` of a piecewise-constant timeline ``[L, D]`` over ``[starts, ends)``.

    Bin ``k`` holds ``timeline[k]`` on ``[k step, (k+1) step)``; windows are clipped to the
    timeline and must have positive length.
    """
    length = timeline.shape[0]
    integral = np.concatenate([np.zeros((1, timeline.shape[1])), np.cumsum(timeline, 0) * step])

    def antiderivative(x: np.ndarray) -> np.ndarray:
        pos = np.clip(x / step, 0.0, length)
        k = np.minimum(np.floor(pos).astype(np.int64), length - 1)
        return integral[k] + ((pos - k) * step)[:, None] * timeline[k]

    a = np.clip(starts, 0.0, length * step)
    b = np.clip(ends, 0.0, length * step)
    return (antiderivative(b) - antiderivative(a)) / (b - a)[:, None]


def video_features(
    cfg: SyntheticConfig, plan: VideoPlan, timeline: np.ndarray
) -> dict[str, np.ndarray]:
    """A video's float32 feature files in the layout(s) of ``cfg.layout``, by path under the
    root: overlapping ``[T_ov, D]`` and non-overlapping ``[T_no, D/2]`` rgb and flow, or resized
    ``[resized_steps, D]``. Each step is the timeline's exact mean over its window."""

    def means(starts: np.ndarray, window: float) -> np.ndarray:
        return window_means(timeline, cfg.timeline_step, starts, starts + window).astype(np.float32)

    if cfg.layout == ACTIVITYNET:
        step = plan.duration / cfg.resized_steps
        resized = means(np.arange(cfg.resized_steps) * step, step)
        return {RESIZED_PATH.format(video=plan.video_id): resized}
    w, s = cfg.snippet_frames, cfg.overlap_stride_frames
    t_ov = math.floor((plan.duration * plan.fps - w) / s + STEP_EPS) + 1
    t_no = math.floor(plan.duration * cfg.nonoverlap_fps / w + STEP_EPS)
    if t_ov < 1 or t_no < 1:
        raise FustalError(f"{plan.video_id}: duration {plan.duration} s is shorter than a window")
    no_step = w / cfg.nonoverlap_fps
    nonoverlapping = means(np.arange(t_no) * no_step, no_step)
    half = cfg.feature_dim // 2
    return {
        f"i3d_features/{plan.video_id}.npy": means(np.arange(t_ov) * s / plan.fps, w / plan.fps),
        f"features/{plan.split}/rgb/{plan.video_id}.npy": nonoverlapping[:, :half],
        f"features/{plan.split}/flow/{plan.video_id}.npy": nonoverlapping[:, half:],
    }


def _annotation_json(
    version: str, names: list[str], plans: list[VideoPlan], layout: str
) -> dict[str, Any]:
    """ActivityNet-schema annotation object (ActionFormer's, with ``segment(frames)``, for
    thumos)."""
    database = {}
    for plan in plans:
        order = np.lexsort((plan.labels, plan.segments[:, 0]))
        annotations = []
        for i in order:
            start, end = float(plan.segments[i, 0]), float(plan.segments[i, 1])
            entry: dict[str, Any] = {"label": names[plan.labels[i]], "segment": [start, end]}
            if layout == THUMOS:
                entry["segment(frames)"] = [round(start * plan.fps, 4), round(end * plan.fps, 4)]
            entry["label_id"] = int(plan.labels[i])
            annotations.append(entry)
        database[plan.video_id] = {
            "subset": ANNOTATION_SUBSETS[layout][plan.split],
            "duration": plan.duration,
            "fps": plan.fps,
            "annotations": annotations,
        }
    return {"version": version, "database": database}


def _wtal_json(names: list[str], plans: list[VideoPlan]) -> dict[str, Any]:
    """WTAL ``gt.json`` object (segments as strings, no duration or fps)."""
    database = {}
    for plan in plans:
        order = np.lexsort((plan.labels, plan.segments[:, 0]))
        database[plan.video_id] = {
            "subset": plan.split,
            "annotations": [
                {
                    "segment": [str(float(plan.segments[i, 0])), str(float(plan.segments[i, 1]))],
                    "label": names[plan.labels[i]],
                }
                for i in order
            ],
        }
    return {"database": database}


def generate(cfg: SyntheticConfig, root: str | Path) -> Path:
    """Write the whole dataset into ``root`` (created if needed); ``synthetic.json`` last.

    An existing marker is removed first, so an interrupted run never looks complete. Files of
    another dataset already in ``root`` are not deleted.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER_NAME).unlink(missing_ok=True)
    identity = _identity(cfg)
    digest = synthetic_hash(cfg)
    names, plans = plan_dataset(cfg)
    directions = make_directions(cfg, len(names))
    for plan in plans:
        timeline = render_timeline(cfg, plan, directions)
        for path, features in video_features(cfg, plan, timeline).items():
            write_npy(root / path, features)
    write_json(
        root / "annotations" / ANNOTATION_FILES[cfg.layout],
        _annotation_json(f"Synthetic-{digest}", names, plans, cfg.layout),
    )
    if cfg.layout == THUMOS:
        write_json(root / "gt.json", _wtal_json(names, plans))
        for split in (TRAIN, TEST):
            with atomic_open(root / f"split_{split}.txt") as handle:
                handle.writelines(f"{p.video_id}\n" for p in plans if p.split == split)
    marker = {
        **identity,
        "hash": digest,
        "classes": names,
        "videos": {split: sum(p.split == split for p in plans) for split in (TRAIN, TEST)},
    }
    write_json(root / MARKER_NAME, marker)
    return root


def _is_complete(root: Path, identity: dict[str, Any]) -> bool:
    """Whether ``root`` holds a finished dataset with exactly this identity."""
    try:
        stored = read_json(root / MARKER_NAME)
    except FustalError:
        return False
    return isinstance(stored, dict) and all(stored.get(k) == v for k, v in identity.items())


def ensure_synthetic(cfg: SyntheticConfig, base_dir: str | Path) -> Path:
    """Return ``base_dir / <hash>``, generating it atomically unless a matching copy exists.

    Generation happens in a temp dir beside the target, renamed into place; when two processes
    race, the loser discards its copy and uses the winner's.
    """
    base = Path(base_dir)
    digest = synthetic_hash(cfg)
    identity = _identity(cfg)
    root = base / digest
    if _is_complete(root, identity):
        return root
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{digest}.", suffix=".tmp", dir=base))
    try:
        generate(cfg, tmp)
        if root.exists() and not _is_complete(root, identity):
            stale = Path(tempfile.mkdtemp(prefix=f".{digest}.", suffix=".stale", dir=base))
            with contextlib.suppress(FileNotFoundError):
                os.rename(root, stale / digest)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp, root)
        except OSError:
            if not _is_complete(root, identity):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _parse_tuple(text: str) -> tuple[float, ...]:
    """``"30,29.97"`` -> ``(30.0, 29.97)``."""
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text}") from None


def build_parser() -> argparse.ArgumentParser:
    """Command-line parser with one ``--option`` per :class:`SyntheticConfig` field; an option
    left out takes the chosen ``--layout``'s default (:meth:`SyntheticConfig.for_layout`)."""
    parser = argparse.ArgumentParser(
        prog="python -m fustal.data.synthetic",
        description="Write the deterministic synthetic THUMOS-like (--layout thumos) or "
        "ActivityNet-like (--layout activitynet) dataset.",
    )
    parser.add_argument("--out", required=True, help="output directory (see --cache)")
    parser.add_argument(
        "--cache",
        action="store_true",
        help="treat --out as a cache base dir: write (or reuse) <out>/<hash>",
    )
    preset = LAYOUT_PRESETS[ACTIVITYNET]
    for field in fields(SyntheticConfig):
        default = field.default
        kind: Any = type(default)
        shown: Any = default
        if isinstance(default, tuple):
            kind, shown = _parse_tuple, ",".join(str(x) for x in default)
        elif default is None:
            kind, shown = str, "none"
        if field.name in preset:
            shown = f"{shown} ({ACTIVITYNET}: {preset[field.name]})"
        elif field.name in ACTIVITYNET_FIELDS and field.name != "layout":
            shown = f"{shown} (read by the {ACTIVITYNET} layout only)"
        parser.add_argument(
            f"--{field.name.replace('_', '-')}",
            type=kind,
            choices=LAYOUTS if field.name == "layout" else None,
            default=argparse.SUPPRESS,
            help=f"default: {shown}",
        )
    return parser


@exit_on_error
def main(argv: Sequence[str] | None = None) -> Path:
    """CLI entry point; prints and returns the dataset root."""
    args = vars(build_parser().parse_args(argv))
    out, cache = args.pop("out"), args.pop("cache")
    cfg = SyntheticConfig.for_layout(args.pop("layout", THUMOS), **args)
    root = ensure_synthetic(cfg, out) if cache else generate(cfg, out)
    print(root)
    return root


if __name__ == "__main__":
    main()
