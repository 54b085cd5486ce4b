"""Tests of the synthetic dataset: on-disk layouts, agreement, determinism, caching, signal; the
ActivityNet-shaped layout, its loaders and its experiment end to end."""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np
import pytest
from omegaconf import MISSING, OmegaConf

import fustal.data.synthetic as synthetic
from fustal.config.schema import SyntheticSchema
from fustal.data.dataset import load_stage_data
from fustal.data.spec import DatasetConfig, ViewConfig
from fustal.data.synthetic import (
    ACTIVITYNET,
    THUMOS,
    SyntheticConfig,
    class_names,
    ensure_synthetic,
    generate,
    make_directions,
    plan_dataset,
    synthetic_hash,
    window_means,
)
from fustal.errors import FustalError
from tests.conftest import compose_train

REAL_THUMOS = Path(__file__).resolve().parents[1] / "data/annotations/thumos14/thumos14.json"
REAL_ANET = (
    Path(__file__).resolve().parents[1] / "data/annotations/activitynet13/activitynet13.json"
)
SMALL = SyntheticConfig(
    num_classes=3,
    train_videos=4,
    test_videos=3,
    min_duration=20.0,
    max_duration=40.0,
    feature_dim=8,
)
# the layout and signal tests' dataset: 60 videos of 40-100 s (the default, the command line's, has
# 200 videos of 30-70 s and takes 2.4 times as long to generate)
MEDIUM = SyntheticConfig(train_videos=40, test_videos=20, min_duration=40.0, max_duration=100.0)
SPLIT_OF_SUBSET = {"validation": "train", "test": "test"}


def steps_overlapping(duration: float, fps: float, window: int, stride: int) -> int:
    return math.floor(round((duration * fps - window) / stride, 6)) + 1


def steps_nonoverlapping(duration: float, window: int, fps: float) -> int:
    return math.floor(round(duration * fps / window, 6))


def read_tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def load_videos(root: Path, split: str) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(id, non-overlapping features [T, D], segments [N, 2], labels [N]) of one split."""
    database = json.loads((root / "annotations/thumos14.json").read_text())["database"]
    videos = []
    for vid, entry in database.items():
        if SPLIT_OF_SUBSET[entry["subset"]] != split:
            continue
        parts = [np.load(root / f"features/{split}/{m}/{vid}.npy") for m in ("rgb", "flow")]
        segments = np.array([a["segment"] for a in entry["annotations"]], dtype=np.float64)
        labels = np.array([a["label_id"] for a in entry["annotations"]], dtype=np.int64)
        videos.append((vid, np.concatenate(parts, axis=1), segments, labels))
    return videos


def signal_regions(cfg: SyntheticConfig, root: Path) -> dict[str, float]:
    """Mean projection on the class prototype in the regions the generative model describes."""
    prototypes = make_directions(cfg, cfg.num_classes).prototypes
    step = cfg.snippet_frames / cfg.nonoverlap_fps
    pools: dict[str, list[np.ndarray]] = {k: [] for k in ("middle", "edge", "context")}
    far_with, far_without = [], []
    for _, x, segments, labels in load_videos(root, "train"):
        t = (np.arange(x.shape[0]) + 0.5) * step
        proj = x @ prototypes.T
        start, end = segments[:, :1], segments[:, 1:]
        rel = (t - start) / (end - start)
        inside = (t >= start) & (t < end)
        gap = np.maximum(start - t, t - end)
        in_any = inside.any(axis=0)
        for i, c in enumerate(labels):
            pools["middle"].append(proj[inside[i] & (rel[i] > 0.3) & (rel[i] < 0.7), c])
            pools["edge"].append(proj[inside[i] & ((rel[i] < 0.15) | (rel[i] > 0.85)), c])
            pools["context"].append(proj[~in_any & (gap[i] > 0) & (gap[i] <= 1.0), c])
        far = np.where(inside, 0.0, gap).min(axis=0) > cfg.context_span + step
        for c in range(cfg.num_classes):
            if far.any():
                (far_with if c in labels else far_without).append(proj[far, c].mean())
    out = {k: float(np.concatenate(v).mean()) for k, v in pools.items()}
    out["far_with"] = float(np.mean(far_with))
    out["far_without"] = float(np.mean(far_without))
    return out


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    order = np.argsort(score, kind="stable")
    ranks = np.empty(score.size)
    ranks[order] = np.arange(1, score.size + 1)
    n1, n0 = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


@pytest.fixture(scope="module")
def medium_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(MEDIUM, tmp_path_factory.mktemp("medium"))


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(SMALL, tmp_path_factory.mktemp("small"))


def test_layout_shapes(medium_root: Path) -> None:
    cfg = MEDIUM
    database = json.loads((medium_root / "annotations/thumos14.json").read_text())["database"]
    assert len(database) == cfg.train_videos + cfg.test_videos
    half = cfg.feature_dim // 2
    for vid, entry in database.items():
        split = SPLIT_OF_SUBSET[entry["subset"]]
        ov = np.load(medium_root / "i3d_features" / f"{vid}.npy")
        t_ov = steps_overlapping(entry["duration"], entry["fps"], 16, 4)
        assert ov.shape == (t_ov, cfg.feature_dim) and ov.dtype == np.float32
        assert (4 * (t_ov - 1) + 16) / entry["fps"] <= entry["duration"] + 1e-9
        t_no = steps_nonoverlapping(entry["duration"], 16, 25.0)
        for modality in ("rgb", "flow"):
            part = np.load(medium_root / f"features/{split}/{modality}/{vid}.npy")
            assert part.shape == (t_no, half) and part.dtype == np.float32
    for split in ("train", "test"):
        names = {p.stem for p in (medium_root / f"features/{split}/rgb").iterdir()}
        expected = {v for v, e in database.items() if SPLIT_OF_SUBSET[e["subset"]] == split}
        assert names == expected
    assert {p.stem for p in (medium_root / "i3d_features").iterdir()} == set(database)
    fps_seen = {entry["fps"] for entry in database.values()}
    assert fps_seen <= set(cfg.fps_choices) and len(fps_seen) >= 2


def test_layouts_share_one_timeline(tmp_path: Path) -> None:
    """With 25 fps and stride == window the two layouts have identical windows."""
    cfg = SyntheticConfig(
        num_classes=2,
        train_videos=2,
        test_videos=2,
        feature_dim=6,
        fps_choices=(25.0,),
        fps_weights=(1.0,),
        overlap_stride_frames=16,
    )
    root = generate(cfg, tmp_path)
    for split in ("train", "test"):
        for vid, x, _, _ in load_videos(root, split):
            ov = np.load(root / "i3d_features" / f"{vid}.npy")
            np.testing.assert_allclose(ov, x, atol=1e-5)


def test_rgb_and_flow_halves_agree_across_layouts(medium_root: Path) -> None:
    database = json.loads((medium_root / "annotations/thumos14.json").read_text())["database"]
    half = MEDIUM.feature_dim // 2
    for vid, x, _, _ in load_videos(medium_root, "train")[:8]:
        ov = np.load(medium_root / "i3d_features" / f"{vid}.npy")
        fps = database[vid]["fps"]
        centres_no = (np.arange(x.shape[0]) + 0.5) * 0.64
        centres_ov = (4 * np.arange(ov.shape[0]) + 8) / fps
        nearest = np.abs(centres_ov[None] - centres_no[:, None]).argmin(axis=1)
        same_rgb = np.corrcoef(ov[nearest, :half].ravel(), x[:, :half].ravel())[0, 1]
        same_flow = np.corrcoef(ov[nearest, half:].ravel(), x[:, half:].ravel())[0, 1]
        swapped = np.corrcoef(ov[nearest, half:].ravel(), x[:, :half].ravel())[0, 1]
        assert same_rgb > 0.8 and same_flow > 0.8 and abs(swapped) < 0.2


def test_window_means_exact() -> None:
    timeline = np.arange(12, dtype=np.float64).reshape(6, 2)
    means = window_means(timeline, 0.5, np.array([0.0, 0.25, 1.0]), np.array([1.0, 0.75, 3.0]))
    np.testing.assert_allclose(means[0], timeline[:2].mean(0))
    np.testing.assert_allclose(means[1], timeline[:2].mean(0))
    np.testing.assert_allclose(means[2], timeline[2:].mean(0))


def test_json_files_agree(medium_root: Path) -> None:
    cfg = MEDIUM
    ann = json.loads((medium_root / "annotations/thumos14.json").read_text())
    gt = json.loads((medium_root / "gt.json").read_text())["database"]
    marker = json.loads((medium_root / "synthetic.json").read_text())
    assert ann["version"] == f"Synthetic-{synthetic_hash(cfg)}" == f"Synthetic-{marker['hash']}"
    classes = marker["classes"]
    assert classes == sorted(classes) == [f"Class{i:02d}" for i in range(cfg.num_classes)]
    database = ann["database"]
    assert set(gt) == set(database)
    for split in ("train", "test"):
        listed = (medium_root / f"split_{split}.txt").read_text().split()
        in_gt = [v for v, e in gt.items() if e["subset"] == split]
        assert listed == in_gt and len(listed) == getattr(cfg, f"{split}_videos")
        prefix = "video_validation_" if split == "train" else "video_test_"
        assert all(re.fullmatch(prefix + r"\d{7}", v) for v in listed)
    used = set()
    for vid, entry in database.items():
        assert SPLIT_OF_SUBSET[entry["subset"]] == gt[vid]["subset"]
        assert cfg.min_duration <= entry["duration"] <= cfg.max_duration
        assert entry["annotations"] and len(gt[vid]["annotations"]) == len(entry["annotations"])
        assert 1 <= len({a["label"] for a in entry["annotations"]}) <= 3
        for a, g in zip(entry["annotations"], gt[vid]["annotations"], strict=True):
            assert all(isinstance(x, str) for x in g["segment"])
            assert [float(x) for x in g["segment"]] == a["segment"] and g["label"] == a["label"]
            assert classes[a["label_id"]] == a["label"]
            np.testing.assert_allclose(a["segment(frames)"], np.array(a["segment"]) * entry["fps"])
            assert 0 <= a["segment"][0] < a["segment"][1] <= entry["duration"]
            used.add(a["label"])
        segs = np.array([a["segment"] for a in entry["annotations"]])
        assert np.all(segs[1:, 0] >= segs[:-1, 1])
    assert used == set(classes)
    assert marker["params"]["num_classes"] == cfg.num_classes and marker["format_version"] == 1


def test_deterministic(small_root: Path, tmp_path: Path) -> None:
    again = generate(SMALL, tmp_path / "again")
    assert read_tree(again) == read_tree(small_root)
    other = generate(replace(SMALL, seed=1), tmp_path / "other")
    first, second = read_tree(small_root), read_tree(other)
    assert first["annotations/thumos14.json"] != second["annotations/thumos14.json"]
    assert first["i3d_features/video_test_0000001.npy"] != second.get(
        "i3d_features/video_test_0000001.npy"
    )


def test_ensure_synthetic_reuses(tmp_path: Path) -> None:
    root = ensure_synthetic(SMALL, tmp_path)
    assert root == tmp_path / synthetic_hash(SMALL)
    marker, feature = root / "synthetic.json", root / "i3d_features/video_test_0000001.npy"
    stamps = (marker.stat().st_mtime_ns, feature.stat().st_mtime_ns)
    assert ensure_synthetic(SMALL, tmp_path) == root
    assert (marker.stat().st_mtime_ns, feature.stat().st_mtime_ns) == stamps
    assert sorted(p.name for p in tmp_path.iterdir()) == [root.name]
    other = ensure_synthetic(replace(SMALL, seed=3), tmp_path)
    assert other != root and (other / "synthetic.json").is_file()


def test_ensure_synthetic_replaces_incomplete(tmp_path: Path, small_root: Path) -> None:
    root = tmp_path / synthetic_hash(SMALL)
    root.mkdir()
    (root / "leftover.npy").write_bytes(b"partial")
    assert ensure_synthetic(SMALL, tmp_path) == root
    assert read_tree(root) == read_tree(small_root)
    assert sorted(p.name for p in tmp_path.iterdir()) == [root.name]


def test_ensure_synthetic_race_loser_uses_winner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_generate = synthetic.generate
    root = tmp_path / synthetic_hash(SMALL)

    def racing_generate(cfg: SyntheticConfig, target: str | Path) -> Path:
        real_generate(cfg, root)
        return real_generate(cfg, target)

    monkeypatch.setattr(synthetic, "generate", racing_generate)
    assert ensure_synthetic(SMALL, tmp_path) == root
    stamp = (root / "synthetic.json").stat().st_mtime_ns
    assert sorted(p.name for p in tmp_path.iterdir()) == [root.name]
    monkeypatch.setattr(synthetic, "generate", real_generate)
    assert ensure_synthetic(SMALL, tmp_path) == root
    assert (root / "synthetic.json").stat().st_mtime_ns == stamp


def test_annotation_file_mode_real_thumos(tmp_path: Path) -> None:
    cfg = SyntheticConfig(
        train_videos=2, test_videos=2, feature_dim=8, annotation_file=str(REAL_THUMOS)
    )
    root = generate(cfg, tmp_path)
    real = json.loads(REAL_THUMOS.read_text())["database"]
    ann = json.loads((root / "annotations/thumos14.json").read_text())["database"]
    expected = []
    for subset in ("validation", "test"):
        ids = sorted(v for v, e in real.items() if e["subset"].lower() == subset)
        expected += ids[:2]
    assert list(ann) == expected
    classes = json.loads((root / "synthetic.json").read_text())["classes"]
    used = sorted({a["label"] for v in expected for a in real[v]["annotations"]})
    assert classes == used
    for vid in expected:
        assert ann[vid]["duration"] == real[vid]["duration"] and ann[vid]["fps"] == real[vid]["fps"]
        got = sorted((a["label"], *a["segment"]) for a in ann[vid]["annotations"])
        want = sorted((a["label"], *a["segment"]) for a in real[vid]["annotations"])
        assert got == want
        assert all(classes[a["label_id"]] == a["label"] for a in ann[vid]["annotations"])
        ov = np.load(root / "i3d_features" / f"{vid}.npy")
        assert ov.shape == (steps_overlapping(real[vid]["duration"], real[vid]["fps"], 16, 4), 8)


def test_annotation_file_mode_clips_and_drops_classes(tmp_path: Path) -> None:
    source = {
        "database": {
            "v_a": {
                "subset": "Validation",
                "duration": 30.0,
                "fps": 25.0,
                "annotations": [
                    {"label": "Zeta", "segment": [2.0, 5.5]},
                    {"label": "Alpha", "segment": [25.0, 99.0]},
                ],
            },
            "v_b": {
                "subset": "Validation",
                "duration": 20.0,
                "fps": 30.0,
                "annotations": [{"label": "Gone", "segment": [40.0, 50.0]}],
            },
            "v_c": {
                "subset": "Test",
                "duration": 25.0,
                "fps": 30.0,
                "annotations": [{"label": "Zeta", "segment": [1.0, 3.0]}],
            },
            "v_d": {
                "subset": "Test",
                "duration": 25.0,
                "fps": 30.0,
                "annotations": [{"label": "Unused", "segment": [1.0, 3.0]}],
            },
        }
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(source))
    cfg = SyntheticConfig(train_videos=1, test_videos=1, feature_dim=4, annotation_file=str(path))
    root = generate(cfg, tmp_path / "out")
    ann = json.loads((root / "annotations/thumos14.json").read_text())["database"]
    assert list(ann) == ["v_a", "v_c"]
    assert [a["segment"] for a in ann["v_a"]["annotations"]] == [[2.0, 5.5], [25.0, 30.0]]
    assert json.loads((root / "synthetic.json").read_text())["classes"] == ["Alpha", "Zeta"]
    assert (root / "split_train.txt").read_text() == "v_a\n"
    too_many = SyntheticConfig(train_videos=2, test_videos=1, annotation_file=str(path))
    with pytest.raises(FustalError, match="only 1 usable 'validation' videos"):
        generate(too_many, tmp_path / "bad")


def test_bad_config() -> None:
    with pytest.raises(FustalError, match="feature_dim"):
        SyntheticConfig(feature_dim=7)
    with pytest.raises(FustalError, match="min_duration"):
        SyntheticConfig(min_duration=50.0, max_duration=40.0)
    with pytest.raises(FustalError, match="fps_weights != fps_choices"):
        SyntheticConfig(fps_choices=(), fps_weights=())
    with pytest.raises(FustalError, match="class_count_weights must not be empty"):
        SyntheticConfig(class_count_weights=())


def test_cli(tmp_path: Path) -> None:
    args = [
        "--num-classes",
        "2",
        "--train-videos",
        "2",
        "--test-videos",
        "2",
        "--feature-dim",
        "4",
        "--fps-choices",
        "25",
        "--fps-weights",
        "1",
    ]
    root = synthetic.main(["--out", str(tmp_path / "plain"), *args])
    params = json.loads((root / "synthetic.json").read_text())["params"]
    assert params["num_classes"] == 2 and params["fps_choices"] == [25.0]
    cached = synthetic.main(["--out", str(tmp_path / "cache"), "--cache", *args])
    assert cached.parent == tmp_path / "cache" and read_tree(cached) == read_tree(root)
    with pytest.raises(SystemExit) as exit_info:
        synthetic.main(["--out", str(tmp_path / "odd"), "--feature-dim", "5"])
    assert exit_info.value.code == 2


def test_signal_shape(medium_root: Path) -> None:
    r = signal_regions(MEDIUM, medium_root)
    assert r["middle"] > r["edge"] + 0.2
    assert r["context"] > r["far_with"] + 0.1
    assert r["far_with"] > r["far_without"] + 0.1


def test_signal_knobs_control_the_effects(tmp_path: Path) -> None:
    cfg = replace(MEDIUM, edge_level=1.0, context_level=0.0, presence_level=0.0)
    r = signal_regions(cfg, generate(cfg, tmp_path))
    assert abs(r["middle"] - r["edge"]) < 0.1
    assert abs(r["context"] - r["far_with"]) < 0.1
    assert abs(r["far_with"] - r["far_without"]) < 0.1


def test_not_a_single_feature_threshold(medium_root: Path) -> None:
    """Actionness is spread over many dimensions: one coordinate ranks poorly, a linear map well."""
    step = 16 / 25.0
    xs, ys = [], []
    for _, x, segments, _ in load_videos(medium_root, "train"):
        t = (np.arange(x.shape[0]) + 0.5) * step
        xs.append(x)
        ys.append(((t >= segments[:, :1]) & (t < segments[:, 1:])).any(axis=0))
    x, y = np.concatenate(xs).astype(np.float64), np.concatenate(ys)
    single = max(max(auc(x[:, j], y), 1 - auc(x[:, j], y)) for j in range(x.shape[1]))
    design = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
    weights = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)[0]
    assert single < 0.8 < auc(design @ weights, y)
    assert 0.15 < y.mean() < 0.5


def test_generation_is_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    generate(MEDIUM, tmp_path)
    assert time.perf_counter() - start < 15.0
    assert not os.listdir(tmp_path / "features/train/rgb")[0].startswith(".")


# ---------------------------------------------------------------- the activitynet layout

ANET_SMALL = SyntheticConfig.for_layout(
    ACTIVITYNET, num_classes=4, train_videos=6, test_videos=4, feature_dim=8, resized_steps=50
)
ANET_ANNOTATIONS = "annotations/activitynet13.json"
RESIZED_YAML = Path(__file__).resolve().parents[1] / "conf/features/resized.yaml"
ANET_KEYS = [f"mAP@{t:g}" for t in np.linspace(0.5, 0.95, 10).round(2)] + ["avg"]


@pytest.fixture(scope="module")
def anet_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(ANET_SMALL, tmp_path_factory.mktemp("anet"))


def test_activitynet_layout_is_what_the_resized_loader_reads(anet_root: Path) -> None:
    ann = json.loads((anet_root / ANET_ANNOTATIONS).read_text())
    database = ann["database"]
    assert ann["version"] == f"Synthetic-{synthetic_hash(ANET_SMALL)}"
    assert sorted(p.name for p in anet_root.iterdir()) == [
        "annotations",
        "features",
        "synthetic.json",
    ]
    assert {p.name for p in (anet_root / "features").iterdir()} == {
        f"v_{vid}.npy" for vid in database
    }
    for vid, entry in database.items():
        assert set(entry) == {"subset", "duration", "fps", "annotations"}
        assert all(set(a) == {"label", "segment", "label_id"} for a in entry["annotations"])
        x = np.load(anet_root / f"features/v_{vid}.npy")
        assert x.shape == (ANET_SMALL.resized_steps, ANET_SMALL.feature_dim)
        assert x.dtype == np.float32

    features = ViewConfig(**OmegaConf.to_container(OmegaConf.load(RESIZED_YAML)))
    dataset = DatasetConfig(str(anet_root), classes=None, skip_missing=False)
    data = load_stage_data(dataset, features)
    assert data.classes == class_names(ANET_SMALL.num_classes)
    assert [len(data.train_videos()), len(data.test_videos())] == [6, 4]
    assert all(v.id.startswith("training_") for v in data.train_videos())
    assert all(v.id.startswith("validation_") for v in data.test_videos())
    for summary in data.summaries:
        assert summary.dim == ANET_SMALL.feature_dim
        assert set(summary.lengths.tolist()) == {ANET_SMALL.resized_steps}
    video = data.test_videos()[0]
    timing = data.features.timing(video, ANET_SMALL.resized_steps)
    assert timing.stride_s == pytest.approx(video.duration / ANET_SMALL.resized_steps)


def test_activitynet_videos_have_one_or_two_long_actions_of_one_class() -> None:
    cfg = SyntheticConfig.for_layout(ACTIVITYNET)
    assert (cfg.num_classes, cfg.min_duration, cfg.max_duration) == (20, 30.0, 120.0)
    names, plans = plan_dataset(cfg)
    assert names == class_names(20) and len(plans) == cfg.train_videos + cfg.test_videos
    counts, fractions, coverage = [], [], []
    for plan in plans:
        segs = plan.segments
        assert cfg.min_duration <= plan.duration <= cfg.max_duration
        assert len(set(plan.labels.tolist())) == 1 and 1 <= segs.shape[0] <= 2
        assert plan.labels[0] == plan.index % cfg.num_classes
        assert np.all(segs[:, 1] - segs[:, 0] >= cfg.min_action_length - 0.02)
        assert segs[0, 0] >= cfg.min_gap - 0.01 and segs[-1, 1] <= plan.duration - 0.99
        assert np.all(segs[1:, 0] - segs[:-1, 1] >= cfg.min_gap - 0.02)
        counts.append(segs.shape[0])
        fractions += ((segs[:, 1] - segs[:, 0]) / plan.duration).tolist()
        coverage.append((segs[:, 1] - segs[:, 0]).sum() / plan.duration)
    assert 0.15 < np.mean(np.array(counts) == 2) < 0.35
    assert 0.3 < np.median(fractions) < 0.5 and 0.4 < np.median(coverage) < 0.6
    assert max(coverage) > 0.85


def test_activitynet_features_follow_the_actions(anet_root: Path) -> None:
    """Step ``i`` covers ``[i h, (i + 1) h)``: the class signal is high on steps inside actions."""
    prototypes = make_directions(ANET_SMALL, ANET_SMALL.num_classes).prototypes
    database = json.loads((anet_root / ANET_ANNOTATIONS).read_text())["database"]
    inside, outside = [], []
    for vid, entry in database.items():
        x = np.load(anet_root / f"features/v_{vid}.npy")
        step = entry["duration"] / x.shape[0]
        t = (np.arange(x.shape[0]) + 0.5) * step
        segs = np.array([a["segment"] for a in entry["annotations"]])
        dist = np.maximum(segs[:, :1] - t, t - segs[:, 1:]).min(axis=0)
        proj = x @ prototypes[entry["annotations"][0]["label_id"]]
        inside.append(proj[dist < -step])
        outside.append(proj[dist > ANET_SMALL.context_span + step])
    assert np.concatenate(inside).mean() > np.concatenate(outside).mean() + 0.5


def test_activitynet_deterministic_and_hashed(anet_root: Path, tmp_path: Path) -> None:
    assert read_tree(generate(ANET_SMALL, tmp_path / "again")) == read_tree(anet_root)
    other = read_tree(generate(replace(ANET_SMALL, seed=1), tmp_path / "other"))
    assert other[ANET_ANNOTATIONS] != read_tree(anet_root)[ANET_ANNOTATIONS]
    assert synthetic_hash(replace(ANET_SMALL, resized_steps=64)) != synthetic_hash(ANET_SMALL)
    marker = json.loads((anet_root / "synthetic.json").read_text())
    assert marker["params"]["layout"] == ACTIVITYNET and marker["params"]["resized_steps"] == 50


def test_default_dataset_hash_is_pinned_and_ignores_the_activitynet_fields() -> None:
    """The default dataset (the command line's, ``conf/dataset/synthetic.yaml``) keeps its hash,
    and so its files and cache entries; a thumos dataset's identity leaves out the fields only the
    activitynet layout reads."""
    assert synthetic_hash(SyntheticConfig()) == "26aad3df3dce"
    changed = replace(SMALL, resized_steps=7, second_action_prob=1.0, action_coverage_median=0.9)
    assert synthetic_hash(changed) == synthetic_hash(SMALL)


def test_activitynet_annotation_file_mode_real_activitynet(tmp_path: Path) -> None:
    cfg = SyntheticConfig.for_layout(
        ACTIVITYNET,
        train_videos=2,
        test_videos=2,
        feature_dim=4,
        resized_steps=16,
        annotation_file=str(REAL_ANET),
    )
    root = generate(cfg, tmp_path)
    real = json.loads(REAL_ANET.read_text())["database"]
    ann = json.loads((root / ANET_ANNOTATIONS).read_text())["database"]
    assert [real[v]["subset"] for v in ann] == ["training"] * 2 + ["validation"] * 2
    for vid in ann:
        assert ann[vid]["duration"] == real[vid]["duration"]
        assert np.load(root / f"features/v_{vid}.npy").shape == (16, 4)


def test_activitynet_bad_config() -> None:
    with pytest.raises(FustalError, match="layout must be one of thumos, activitynet"):
        SyntheticConfig(layout="ucf101")
    with pytest.raises(FustalError, match="layout must be one of"):
        SyntheticConfig.for_layout("ucf101")
    with pytest.raises(FustalError, match="too short for two actions"):
        SyntheticConfig.for_layout(ACTIVITYNET, min_duration=4.0)
    with pytest.raises(FustalError, match="resized_steps"):
        SyntheticConfig.for_layout(ACTIVITYNET, resized_steps=0)


def test_cli_activitynet_preset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["--layout", "activitynet", "--train-videos", "2", "--test-videos", "2"]
    root = synthetic.main(["--out", str(tmp_path), *args, "--feature-dim", "4"])
    params = json.loads((root / "synthetic.json").read_text())["params"]
    assert (params["num_classes"], params["max_duration"], params["train_videos"]) == (20, 120, 2)
    assert (root / ANET_ANNOTATIONS).is_file()
    with pytest.raises(SystemExit):
        synthetic.main(["--help"])
    assert "activitynet: 20" in capsys.readouterr().out


# the dataset configs that generate synthetic data, and the values each sets on purpose
SYNTHETIC_DATASETS: dict[str, set[str]] = {
    "synthetic": set(),
    "activitynet13_synthetic": set(),
    "activitynet12_synthetic": {"annotation_file"},
}


@pytest.mark.parametrize("dataset", SYNTHETIC_DATASETS)
def test_dataset_configs_list_the_class_defaults(tmp_path: Path, dataset: str) -> None:
    """Every value ``conf/dataset/<dataset>.yaml`` lists under ``dataset.synthetic`` is the
    default of its layout (:class:`SyntheticConfig` and :data:`LAYOUT_PRESETS`), type included
    (the hash tells 30 from 30.0): the class holds the defaults, the YAML lists what to set."""
    cfg = compose_train(tmp_path, f"dataset={dataset}", debug=False)
    listed = OmegaConf.to_container(cfg.dataset.synthetic)
    assert isinstance(listed, dict)
    default = asdict(SyntheticConfig.for_layout(listed.get("layout", THUMOS)))
    keys = set(listed) - SYNTHETIC_DATASETS[dataset]
    assert {k: (listed[k], type(listed[k])) for k in keys} == {
        k: (default[k], type(default[k])) for k in keys
    }


def test_the_schema_types_the_class_fields_and_leaves_their_defaults_to_it() -> None:
    """The config schema's ``dataset.synthetic`` keys are :class:`SyntheticConfig` fields of the
    same type, with no default of their own (the class states them)."""
    declared = {f.name: f.type for f in fields(SyntheticConfig)}
    for f in fields(SyntheticSchema):
        assert f.type == declared[f.name] and f.default == MISSING, f.name


def test_activitynet_experiment_defaults(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, "+experiment=activitynet13_synthetic", debug=False)
    assert list(cfg.dataset.tiou_thresholds) == pytest.approx(np.linspace(0.5, 0.95, 10))
    assert cfg.dataset.root is None and cfg.dataset.synthetic.layout == ACTIVITYNET
    assert {cfg.features.generator.layout, cfg.features.student.layout} == {"resized"}
    net = cfg.student.module.net
    steps = cfg.dataset.synthetic.resized_steps
    assert cfg.generator.data.num_segments == net.max_seq_len == steps == 128
    assert steps % 2 ** net.arch[2] == 0 and len(net.regression_ranges) == net.arch[2] + 1
