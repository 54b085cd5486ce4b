"""Data foundation: bundled annotations, time conversions, resampling, feature readers, stage views,
the generator/student DataModules and the rank-aware epoch sampler."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import fustal.data.sampling as sampling
from fustal.config import to_plain
from fustal.data.annotations import Annotations, Video, load_annotations
from fustal.data.dataset import StageData, align_skipped, load_stage_data, validate_stage_data
from fustal.data.features import (
    FeatureSpec,
    Timing,
    grid_to_seconds,
    resample_indices,
    seconds_to_grid,
)
from fustal.data.generator_datamodule import GeneratorDataModule, GeneratorVideos
from fustal.data.sampling import EpochSampler, split_key
from fustal.data.spec import DatasetConfig, ViewConfig
from fustal.data.student_datamodule import PseudoLabelDataModule, StudentVideos, random_crop
from fustal.errors import FustalError
from tests.conftest import ANNOTATIONS_DIR, CONF_DIR, REPO_ROOT

THUMOS = ANNOTATIONS_DIR / "thumos14"
ANET = ANNOTATIONS_DIR / "activitynet13"
ANET12_FILE = ANNOTATIONS_DIR / "activitynet12" / "activity_net.v1-2.min-missing-removed.json"
THUMOS_CLASSES = [
    "BaseballPitch",
    "BasketballDunk",
    "Billiards",
    "CleanAndJerk",
    "CliffDiving",
    "CricketBowling",
    "CricketShot",
    "Diving",
    "FrisbeeCatch",
    "GolfSwing",
    "HammerThrow",
    "HighJump",
    "JavelinThrow",
    "LongJump",
    "PoleVault",
    "Shotput",
    "SoccerPenalty",
    "TennisSwing",
    "ThrowDiscus",
    "VolleyballSpiking",
]


def features_cfg(name: str) -> ViewConfig:
    """A ``conf/features/<name>.yaml`` group file as the data layer's view."""
    return ViewConfig(
        **OmegaConf.to_container(OmegaConf.load(CONF_DIR / "features" / f"{name}.yaml"))
    )


def instances(annotations: Annotations, subset: str) -> int:
    return sum(v.num_segments for v in annotations.subset(subset))


@pytest.fixture(scope="module")
def thumos() -> Annotations:
    return load_annotations(THUMOS / "thumos14.json")


@pytest.fixture(scope="module")
def wtal() -> Annotations:
    return load_annotations(
        THUMOS / "gt.json",
        split_files={"train": THUMOS / "split_train.txt", "test": THUMOS / "split_test.txt"},
    )


@pytest.fixture(scope="module")
def anet() -> Annotations:
    return load_annotations(ANET / "activitynet13.json")


@pytest.fixture(scope="module")
def generator_view(synthetic_root: Path) -> StageData:
    return load_stage_data(DatasetConfig(str(synthetic_root)), features_cfg("i3d_nonoverlap"))


@pytest.fixture(scope="module")
def student_view(synthetic_root: Path) -> StageData:
    return load_stage_data(DatasetConfig(str(synthetic_root)), features_cfg("i3d_overlap"))


# ---------------------------------------------------------------- bundled real annotations


def test_thumos14_json_counts_and_classes(thumos: Annotations) -> None:
    assert thumos.num_classes == 20
    assert thumos.classes == THUMOS_CLASSES
    assert thumos.classes.index("BaseballPitch") == 0
    assert thumos.classes.index("VolleyballSpiking") == 19
    assert len(thumos.subset("validation")) == 200
    assert len(thumos.subset("test")) == 212
    assert instances(thumos, "validation") == 3007
    assert instances(thumos, "test") == 3358
    assert thumos.clipped_segments == 30


def test_thumos14_label_ids_match_class_indices(thumos: Annotations) -> None:
    database = json.loads((THUMOS / "thumos14.json").read_text())["database"]
    for vid, entry in database.items():
        stored = [a["label_id"] for a in entry["annotations"]]
        assert thumos.videos[vid].labels.tolist() == stored, vid


def test_thumos14_segments_clipped_to_duration(thumos: Annotations) -> None:
    raw = json.loads((THUMOS / "thumos14.json").read_text())["database"]
    ends_after = sum(
        float(a["segment"][1]) > float(e["duration"])
        for e in raw.values()
        for a in e["annotations"]
    )
    assert ends_after == 30
    for video in thumos.videos.values():
        assert video.duration is not None and video.fps is not None
        if video.num_segments:
            assert video.segments.max() <= video.duration
            assert (video.segments[:, 1] >= video.segments[:, 0]).all()


@pytest.mark.parametrize("which", ["thumos", "wtal"])
def test_cliff_diving_is_also_diving(which: str, request: pytest.FixtureRequest) -> None:
    annotations: Annotations = request.getfixturevalue(which)
    cliff, diving = (annotations.classes.index(n) for n in ("CliffDiving", "Diving"))
    count = 0
    for video in annotations.videos.values():
        dives = {tuple(s) for s in video.segments[video.labels == diving].tolist()}
        for seg in video.segments[video.labels == cliff].tolist():
            assert tuple(seg) in dives, video.id
            count += 1
    assert count > 0


def test_wtal_gt_with_split_files(wtal: Annotations, thumos: Annotations) -> None:
    assert wtal.classes == THUMOS_CLASSES
    assert wtal.subsets == ["test", "train"]
    assert len(wtal.subset("train")) == 200
    assert len(wtal.subset("test")) == 210
    assert instances(wtal, "train") == 3007
    assert instances(wtal, "test") == 3311
    split = (THUMOS / "split_test.txt").read_text().split()
    assert [v.id for v in wtal.subset("test")] == split
    test_ids = {v.id for v in thumos.subset("test")}
    assert test_ids - set(split) == {"video_test_0000270", "video_test_0001496"}
    # no duration or fps in gt.json
    assert all(v.duration is None and v.fps is None for v in wtal.videos.values())


def test_wtal_string_segments_parsed(wtal: Annotations) -> None:
    raw = json.loads((THUMOS / "gt.json").read_text())["database"]["video_test_0000896"]
    assert isinstance(raw["annotations"][0]["segment"][0], str)
    video = wtal.videos["video_test_0000896"]
    assert video.segments.dtype == np.float64
    expected = [[float(x) for x in a["segment"]] for a in raw["annotations"]]
    np.testing.assert_array_equal(video.segments, expected)
    assert video.segments[0].tolist() == [18.6, 24.8]
    assert set(video.labels.tolist()) == {THUMOS_CLASSES.index("HighJump")}


def test_wtal_and_thumos_annotations_agree(wtal: Annotations) -> None:
    """Both THUMOS'14 files carry the same instances of every video gt.json lists."""
    unclipped = load_annotations(THUMOS / "thumos14.json", clip_to_duration=False)
    assert unclipped.clipped_segments == 0
    assert {v.id for v in wtal.subset("train")} == {v.id for v in unclipped.subset("validation")}
    for video in wtal.videos.values():
        other = unclipped.videos[video.id]
        mine = sorted(zip(video.labels.tolist(), video.segments.tolist(), strict=True))
        theirs = sorted(zip(other.labels.tolist(), other.segments.tolist(), strict=True))
        assert mine == theirs, video.id


def test_activitynet13_counts(anet: Annotations) -> None:
    assert anet.num_classes == 200
    with open(ANET / "action_name.csv", newline="") as handle:
        names = [row["action"] for row in csv.DictReader(handle)]
    assert anet.classes == sorted(names)
    assert len(anet.subset("training")) == 9649
    assert instances(anet, "training") == 14859
    assert len(anet.subset("validation")) == 4728
    assert instances(anet, "validation") == 7293


def test_activitynet12_counts() -> None:
    anet12 = load_annotations(ANET12_FILE)
    assert anet12.num_classes == 100
    assert [len(anet12.subset(s)) for s in ("training", "validation", "testing")] == [
        4441,
        2198,
        2268,
    ]
    assert instances(anet12, "training") == 6588
    assert instances(anet12, "validation") == 3281
    assert all(v.num_segments and v.duration for v in anet12.subset("validation"))
    database = json.loads(ANET12_FILE.read_text())["database"]
    assert {a["label"] for e in database.values() for a in e["annotations"]} == set(anet12.classes)


def test_activitynet12_experiment_validates_with_stage_data(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """``+experiment=activitynet12`` reads the bundled v1.2 file; ``stage=data`` checks a root
    with resized features (here of two videos per subset, the others skipped)."""
    from fustal.pipeline.run import run_pipeline
    from tests.conftest import compose_train

    anet12 = load_annotations(ANET12_FILE)
    root = tmp_path / "anet12"
    (root / "features").mkdir(parents=True)
    kept = [v for s in ("training", "validation") for v in anet12.subset(s)[:2]]
    for video in kept:
        np.save(root / "features" / f"v_{video.id}.npy", np.ones((100, 8), np.float32))
    overrides = [
        "+experiment=activitynet12",
        f"dataset.root={root}",
        f"paths.annotations_dir={ANNOTATIONS_DIR}",
        "stage=data",
    ]
    cfg = compose_train(tmp_path, *overrides, "dataset.skip_missing=true", debug=False)
    assert cfg.dataset.tiou_thresholds[0] == 0.5 and cfg.fusion.source == "generator"
    run_pipeline(cfg)
    out = " ".join(capsys.readouterr().out.split())
    assert "training" in out and "validation" in out and "classes (100)" in out
    with pytest.raises(FustalError, match="v_"):  # without skip_missing: the missing files
        run_pipeline(compose_train(tmp_path, *overrides, debug=False))


def test_convert_activitynet_reproduces_bundled_file(tmp_path: Path) -> None:
    out = tmp_path / "anet.json"
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts/convert_activitynet.py"), str(ANET)]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text()) == json.loads((ANET / "activitynet13.json").read_text())


def test_subset_names_case_insensitive(thumos: Annotations, wtal: Annotations) -> None:
    assert thumos.subsets == ["Test", "Validation"]
    ids = [v.id for v in thumos.subset("validation")]
    assert len(ids) == 200
    for name in ("Validation", "VALIDATION", "vAlIdAtIoN"):
        assert [v.id for v in thumos.subset(name)] == ids
    assert thumos.has_subset("TEST") and not thumos.has_subset("training")
    assert len(wtal.subset("Train")) == 200


def test_unknown_subset_names_the_file(thumos: Annotations) -> None:
    with pytest.raises(FustalError, match="thumos14.json") as err:
        thumos.subset("training")
    assert "training" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("entry", "what"),
    [
        ({"duration": 10, "annotations": [{"label": "A", "segment": [5, 2]}]}, "ends before"),
        ({"duration": 10, "annotations": [{"label": "A", "segment": [-1, 2]}]}, "negative"),
        ({"duration": 10, "annotations": [{"label": "A", "segment": ["x", 2]}]}, "not a number"),
        ({"duration": 0, "annotations": []}, "duration"),
    ],
)
def test_bad_annotation_names_file_and_video(tmp_path: Path, entry: dict, what: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"database": {"vid1": {"subset": "train", **entry}}}))
    with pytest.raises(FustalError, match=what) as err:
        load_annotations(path)
    assert "bad.json" in str(err.value) and "vid1" in str(err.value)


@pytest.mark.parametrize("classes", [None, ["A"]])
@pytest.mark.parametrize("annotation", ["oops", {"segment": [1, 2]}])
def test_annotation_without_label(tmp_path: Path, classes: list | None, annotation) -> None:
    """Also with a given class list (the generator view gets the student's classes)."""
    entry = {"subset": "train", "duration": 10, "annotations": [annotation]}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"database": {"vid1": entry}}))
    with pytest.raises(FustalError, match="vid1: annotation without a 'label'"):
        load_annotations(path, classes=classes)


def test_label_outside_given_classes(tmp_path: Path) -> None:
    entry = {"subset": "train", "annotations": [{"label": "A", "segment": ["1", "2"]}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"database": {"vid1": entry}}))
    with pytest.raises(FustalError, match="vid1: class 'A' is not in the class list"):
        load_annotations(path, classes=["B"])
    assert load_annotations(path, classes=["B", "A"]).videos["vid1"].labels.tolist() == [1]


def test_null_fps_and_ambiguous_label(tmp_path: Path) -> None:
    annotations = [
        {"label": "Ambiguous", "segment": [0, 1]},
        {"label": "A", "segment": [2, 12]},
    ]
    entry = {"subset": "test", "duration": 10, "fps": None, "annotations": annotations}
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"database": {"vid1": entry}}))
    loaded = load_annotations(path)
    video = loaded.videos["vid1"]
    assert loaded.classes == ["A"] and video.fps is None and video.duration == 10.0
    assert video.segments.tolist() == [[2.0, 10.0]] and loaded.clipped_segments == 1


def test_video_label_multi_hot() -> None:
    video = Video("v", "train", 10.0, 30.0, np.zeros((3, 2)), np.array([2, 0, 2]))
    np.testing.assert_array_equal(video.video_label(4), [1, 0, 1, 0])
    assert video.video_label(4).dtype == np.float32


# ---------------------------------------------------------------- time conversions


@pytest.mark.parametrize("fps", [30.0, 29.97])
def test_overlap_grid_matches_method_formula(fps: float) -> None:
    spec = FeatureSpec.from_config(features_cfg("i3d_overlap"), "/unused")
    duration = 120.0
    video = Video("v", "test", duration, fps, np.zeros((0, 2)), np.zeros(0, np.int64))
    timing = spec.timing(video, 800)
    assert timing == Timing(4 / fps, 16 / fps)
    t = np.linspace(0.0, duration, 997)
    np.testing.assert_allclose(seconds_to_grid(t, timing), (t * fps - 0.5 * 16) / 4, atol=1e-9)
    g = np.arange(0, 800, 0.25)
    expected = np.clip((g * 4 + 0.5 * 16) / fps, 0.0, duration)
    np.testing.assert_allclose(grid_to_seconds(g, timing, duration), expected, atol=1e-9)
    # step centres: (4 i + 8) / fps
    np.testing.assert_allclose(
        grid_to_seconds(np.arange(10), timing), (4 * np.arange(10) + 8) / fps
    )
    # round trips: seconds inside the video, and grid points that map inside it
    np.testing.assert_allclose(grid_to_seconds(seconds_to_grid(t, timing), timing, duration), t)
    inside = g[(g * 4 + 8) / fps <= duration]
    np.testing.assert_allclose(
        seconds_to_grid(grid_to_seconds(inside, timing, duration), timing), inside
    )


def test_grid_to_seconds_clips_to_duration() -> None:
    timing = Timing(stride_s=4 / 30, window_s=16 / 30)
    assert grid_to_seconds(-10.0, timing, 50.0) == 0.0
    assert grid_to_seconds(1e6, timing, 50.0) == 50.0
    assert grid_to_seconds(1e6, timing) == pytest.approx(1e6 * 4 / 30 + 8 / 30)
    assert grid_to_seconds(np.array([[-3.0, 10.0]]), timing, 50.0).shape == (1, 2)


def test_nonoverlap_and_resized_timing() -> None:
    nonoverlap = FeatureSpec.from_config(features_cfg("i3d_nonoverlap"), "/unused")
    video = Video("v", "train", None, None, np.zeros((0, 2)), np.zeros(0, np.int64))
    assert nonoverlap.timing(video, 100) == Timing(16 / 25, 16 / 25)
    resized = FeatureSpec.from_config(features_cfg("resized"), "/unused")
    video = Video("v", "training", 50.0, None, np.zeros((0, 2)), np.zeros(0, np.int64))
    timing = resized.timing(video, 100)
    assert timing == Timing(0.5, 0.5)
    np.testing.assert_allclose(grid_to_seconds([0, 99], timing, 50.0), [0.25, 49.75])
    overlap = FeatureSpec.from_config(features_cfg("i3d_overlap"), "/unused")
    with pytest.raises(FustalError, match="fps"):
        overlap.timing(video, 100)
    no_duration = Video("w", "training", None, None, np.zeros((0, 2)), np.zeros(0, np.int64))
    with pytest.raises(FustalError, match="duration"):
        resized.timing(no_duration, 100)


# ---------------------------------------------------------------- resampling


@pytest.mark.parametrize(("length", "num"), [(1000, 750), (751, 750), (2, 7)])
def test_resample_test_mode_uniform(length: int, num: int) -> None:
    idx = resample_indices(length, num)
    expected = np.floor(np.arange(num) * length / num) if length > num else np.arange(length)
    np.testing.assert_array_equal(idx, expected)
    assert idx.dtype == np.int64


@pytest.mark.parametrize("length", [300, 750])
def test_resample_test_mode_keeps_short_videos(length: int) -> None:
    np.testing.assert_array_equal(resample_indices(length, 750), np.arange(length))


def bin_bounds(length: int, num: int) -> tuple[np.ndarray, np.ndarray]:
    """First step of each bin and the largest index the bin may return (inclusive)."""
    starts = np.array([math.floor(i * length / num) for i in range(num)])
    highs = np.append(starts[1:], length - 1)
    return starts, np.maximum(highs, starts)


@pytest.mark.parametrize(("length", "num"), [(1000, 750), (3000, 750), (200, 750), (31, 10)])
def test_resample_training_one_index_per_bin(length: int, num: int) -> None:
    starts, highs = bin_bounds(length, num)
    rng = np.random.default_rng(0)
    for _ in range(20):
        idx = resample_indices(length, num, rng)
        assert idx.shape == (num,) and idx.dtype == np.int64
        assert (idx >= starts).all() and (idx <= highs).all()
        assert (np.diff(idx) >= 0).all()


def test_resample_training_reaches_both_bin_ends() -> None:
    length, num = 30, 10  # bins of 3 steps: each may return start..start+3
    starts, highs = bin_bounds(length, num)
    rng = np.random.default_rng(1)
    draws = np.stack([resample_indices(length, num, rng) for _ in range(400)])
    for i in range(num):
        assert set(draws[:, i].tolist()) == set(range(starts[i], highs[i] + 1))


def test_resample_training_identity_and_determinism() -> None:
    np.testing.assert_array_equal(
        resample_indices(750, 750, np.random.default_rng(3)), np.arange(750)
    )
    a = resample_indices(1234, 750, np.random.default_rng(7))
    b = resample_indices(1234, 750, np.random.default_rng(7))
    c = resample_indices(1234, 750, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# ---------------------------------------------------------------- feature readers


def test_feature_spec_nonoverlap_concatenates_streams(
    generator_view: StageData, synthetic_root: Path
) -> None:
    durations = {
        vid: e["duration"]
        for vid, e in json.loads((synthetic_root / "annotations/thumos14.json").read_text())[
            "database"
        ].items()
    }
    for video in generator_view.train_videos() + generator_view.test_videos():
        feats = generator_view.features.load(video)
        rgb, flow = (
            np.load(synthetic_root / f"features/{video.subset}/{s}/{video.id}.npy")
            for s in ("rgb", "flow")
        )
        assert feats.dtype == np.float32
        assert feats.shape == (math.floor(durations[video.id] * 25 / 16 + 1e-6), 16)
        np.testing.assert_array_equal(feats, np.concatenate([rgb, flow], axis=1))


def test_feature_spec_overlap_reads_one_file(student_view: StageData, synthetic_root: Path) -> None:
    for video in student_view.train_videos() + student_view.test_videos():
        feats = student_view.features.load(video)
        steps = math.floor((video.duration * video.fps - 16) / 4 + 1e-6) + 1
        assert feats.shape == (steps, 16)
        np.testing.assert_array_equal(
            feats, np.load(synthetic_root / f"i3d_features/{video.id}.npy")
        )


@pytest.mark.parametrize("layout", ["i3d_nonoverlap", "i3d_overlap"])
def test_feature_spec_dimension_check(synthetic_root: Path, layout: str) -> None:
    data = load_stage_data(
        DatasetConfig(str(synthetic_root)), replace(features_cfg(layout), dim=16)
    )
    video = data.train_videos()[0]
    assert data.features.load(video).shape[1] == 16
    wrong = FeatureSpec.from_config(replace(features_cfg(layout), dim=2048), synthetic_root)
    with pytest.raises(FustalError, match="expected 2048") as err:
        wrong.load(video)
    assert video.id in str(err.value)


def test_feature_spec_bad_files(tmp_path: Path) -> None:
    spec = FeatureSpec(tmp_path, "overlap", "{video}.npy")
    video = Video("v", "test", 10.0, 30.0, np.zeros((0, 2)), np.zeros(0, np.int64))
    with pytest.raises(FustalError, match="not found"):
        spec.load(video)
    (tmp_path / "v.npy").write_text("0.1 0.2\n0.3 0.4\n")
    with pytest.raises(FustalError, match="v.npy: not a readable .npy file \\(no NumPy header"):
        spec.load(video)
    for bad, what in [
        (np.zeros(5, np.float32), "expected a \\[T, D\\]"),
        (np.zeros((3, 4), np.int64), "floating point"),
        (np.full((3, 4), np.nan, np.float32), "NaN"),
        (np.zeros((0, 4), np.float32), "empty"),
    ]:
        np.save(tmp_path / "v.npy", bad)
        with pytest.raises(FustalError, match=what) as err:
            spec.load(video)
        assert "v.npy" in str(err.value)


def test_feature_spec_stream_length_mismatch(tmp_path: Path) -> None:
    spec = FeatureSpec(tmp_path, "nonoverlap", "{stream}/{video}.npy", streams=("rgb", "flow"))
    (tmp_path / "rgb").mkdir()
    (tmp_path / "flow").mkdir()
    np.save(tmp_path / "rgb/v.npy", np.zeros((5, 2), np.float32))
    np.save(tmp_path / "flow/v.npy", np.zeros((6, 2), np.float32))
    video = Video("v", "train", None, None, np.zeros((0, 2)), np.zeros(0, np.int64))
    with pytest.raises(FustalError, match="different lengths") as err:
        spec.load(video)
    assert f"{tmp_path / 'rgb/v.npy'}: 5, {tmp_path / 'flow/v.npy'}: 6" in str(err.value)


# ---------------------------------------------------------------- stage views


def test_stage_views_of_synthetic_dataset(
    generator_view: StageData, student_view: StageData, synthetic_root: Path
) -> None:
    assert (generator_view.train_subset, generator_view.test_subset) == ("train", "test")
    assert (student_view.train_subset, student_view.test_subset) == ("validation", "test")
    assert generator_view.features.layout == "nonoverlap"
    assert student_view.features.layout == "overlap"
    classes = ["Class00", "Class01", "Class02"]
    assert generator_view.classes == student_view.classes == classes
    for gen, stu in [
        (generator_view.train_videos(), student_view.train_videos()),
        (generator_view.test_videos(), student_view.test_videos()),
    ]:
        assert [v.id for v in gen] == [v.id for v in stu]
        for g, s in zip(gen, stu, strict=True):
            # gt.json stores the same segments as strings
            np.testing.assert_allclose(g.segments, s.segments)
            np.testing.assert_array_equal(g.labels, s.labels)
    assert len(student_view.train_videos()) == 8 and len(student_view.test_videos()) == 4


@pytest.mark.parametrize("view", ["generator_view", "student_view"])
def test_validate_stage_data_summaries(view: str, request: pytest.FixtureRequest) -> None:
    data: StageData = request.getfixturevalue(view)
    train, test = validate_stage_data(data)
    assert (train.subset, train.videos, test.videos) == (data.train_subset, 8, 4)
    assert train.instances == sum(v.num_segments for v in data.train_videos())
    assert train.dim == test.dim == 16
    assert train.classes_present == 3
    expected = [data.features.load(v).shape[0] for v in data.test_videos()]
    assert test.lengths.tolist() == expected


def test_load_stage_data_from_composed_features_config(synthetic_root: Path) -> None:
    """The same files through the typed nodes built from OmegaConf nodes, as the pipeline does
    (keys a node leaves out take the defaults)."""
    dataset = OmegaConf.create({"root": str(synthetic_root), "skip_missing": False})
    features = OmegaConf.load(CONF_DIR / "features" / "i3d_overlap.yaml")
    data = load_stage_data(DatasetConfig(**to_plain(dataset)), ViewConfig(**to_plain(features)))
    assert len(data.train_videos()) == 8


def test_load_stage_data_root_errors(tmp_path: Path) -> None:
    with pytest.raises(FustalError, match="dataset.root: not set"):
        load_stage_data(DatasetConfig(), features_cfg("i3d_overlap"))
    missing = tmp_path / "nowhere"
    with pytest.raises(FustalError, match=str(missing)):
        load_stage_data(DatasetConfig(str(missing)), features_cfg("i3d_overlap"))


def test_missing_features_error_or_skip(synthetic_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(synthetic_root, root)
    victim = "video_validation_0000003"
    (root / "i3d_features" / f"{victim}.npy").unlink()
    with pytest.raises(FustalError, match=victim) as err:
        load_stage_data(DatasetConfig(str(root)), features_cfg("i3d_overlap"))
    assert "skip_missing" in str(err.value)
    data = load_stage_data(DatasetConfig(str(root), skip_missing=True), features_cfg("i3d_overlap"))
    assert data.skipped == {"validation": [victim]}
    assert victim not in [v.id for v in data.train_videos()]
    assert len(data.train_videos()) == 7 and len(data.test_videos()) == 4
    assert validate_stage_data(data)[0].skipped == 1


def test_validate_rejects_inconsistent_dimension(synthetic_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(synthetic_root, root)
    np.save(root / "i3d_features/video_test_0000002.npy", np.zeros((50, 8), np.float32))
    data = load_stage_data(DatasetConfig(str(root)), features_cfg("i3d_overlap"), validate=False)
    with pytest.raises(FustalError, match="video_test_0000002.npy"):
        validate_stage_data(data)
    # loading validates by default: bad features fail before any training starts
    with pytest.raises(FustalError, match="video_test_0000002.npy: feature dimension 8 differs"):
        load_stage_data(DatasetConfig(str(root)), features_cfg("i3d_overlap"))


def test_validation_summaries_are_kept(
    synthetic_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = load_stage_data(DatasetConfig(str(synthetic_root)), features_cfg("i3d_overlap"))
    assert data.summaries is not None and data.summaries[0].videos == 8
    monkeypatch.setattr(FeatureSpec, "load", lambda *args: pytest.fail("read again"))
    assert validate_stage_data(data) is data.summaries


def test_align_skipped_makes_both_views_skip_a_video(synthetic_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(synthetic_root, root)
    (root / "i3d_features/video_test_0000002.npy").unlink()
    (root / "features/train/rgb/video_validation_0000005.npy").unlink()
    dataset = DatasetConfig(str(root), skip_missing=True)
    student = load_stage_data(dataset, features_cfg("i3d_overlap"))
    generator = load_stage_data(dataset, features_cfg("i3d_nonoverlap"))
    assert student.skipped == {"test": ["video_test_0000002"]}
    assert generator.skipped == {"train": ["video_validation_0000005"]}
    align_skipped(generator, student)
    for view in (generator, student):
        assert "video_validation_0000005" not in [v.id for v in view.train_videos()]
        assert "video_test_0000002" not in [v.id for v in view.test_videos()]
        assert len(view.train_videos()) == 7 and len(view.test_videos()) == 3
        train, test = validate_stage_data(view)
        assert (train.videos, test.videos, train.skipped, test.skipped) == (7, 3, 1, 1)
    assert [v.id for v in generator.train_videos()] == [v.id for v in student.train_videos()]


# ---------------------------------------------------------------- generator data


def matching_rows(sample: np.ndarray, feats: np.ndarray) -> np.ndarray:
    """Index in ``feats [T, D]`` of each row of ``sample [N, D]`` (rows are distinct)."""
    dist = ((sample[:, None, :] - feats[None, :, :]) ** 2).sum(-1)
    rows = dist.argmin(1)
    assert np.allclose(dist[np.arange(len(rows)), rows], 0.0)
    return rows


def test_generator_train_batches(generator_view: StageData) -> None:
    num_segments = 40
    dm = GeneratorDataModule(generator_view, num_segments=num_segments, batch_size=3, seed=5)
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == 2  # 8 videos, batch 3, last partial batch dropped
    seen = []
    for batch in batches:
        assert batch["features"].shape == (3, num_segments, 16)
        assert batch["labels"].shape == (3, 3)
        assert batch["valid"].tolist() == [num_segments] * 3
        for i, vid in enumerate(batch["video_id"]):
            video = generator_view.annotations.videos[vid]
            feats = generator_view.features.load(video)
            assert batch["length"][i] == feats.shape[0]
            assert batch["seconds_per_step"][i].item() == pytest.approx(
                16 / 25 * feats.shape[0] / num_segments
            )
            np.testing.assert_array_equal(batch["labels"][i].numpy(), video.video_label(3))
            rows = matching_rows(batch["features"][i].numpy(), feats)
            starts, highs = bin_bounds(feats.shape[0], num_segments)
            assert (rows >= starts).all() and (rows <= highs).all()
            seen.append(vid)
    assert len(set(seen)) == 6


def test_generator_items_deterministic_per_epoch(generator_view: StageData) -> None:
    videos = generator_view.train_videos()
    a = GeneratorVideos(generator_view, videos, 20, train=True, seed=1)
    b = GeneratorVideos(generator_view, videos, 20, train=True, seed=1)
    n = len(videos)
    torch.testing.assert_close(a[n + 2]["features"], b[n + 2]["features"])
    assert a[n + 2]["video_id"] == a[2]["video_id"] == videos[2].id
    assert not torch.equal(a[2]["features"], a[n + 2]["features"])


def test_generator_eval_batches_pad_and_mark_valid(generator_view: StageData) -> None:
    num_segments = 45
    dm = GeneratorDataModule(generator_view, num_segments=num_segments, eval_batch_size=4)
    lengths = [generator_view.features.load(v).shape[0] for v in dm.videos["test"]]
    assert min(lengths) < num_segments < max(lengths)  # both branches of test sampling
    (batch,) = list(dm.val_dataloader())
    valid = [min(t, num_segments) for t in lengths]
    assert batch["video_id"] == [v.id for v in dm.videos["test"]]
    assert batch["valid"].tolist() == valid
    assert batch["features"].shape == (4, max(valid), 16)
    for i, video in enumerate(dm.videos["test"]):
        feats = generator_view.features.load(video)
        idx = resample_indices(feats.shape[0], num_segments)
        np.testing.assert_array_equal(batch["features"][i, : valid[i]].numpy(), feats[idx])
        assert (batch["features"][i, valid[i] :] == 0).all()
        assert batch["seconds_per_step"][i].item() == pytest.approx(
            16 / 25 * feats.shape[0] / valid[i]
        )
    predicted = [v for b in dm.loader("train") for v in b["video_id"]]
    assert predicted == [v.id for v in dm.videos["train"]]


# ---------------------------------------------------------------- student data


def gt_targets(data: StageData, drop: str | None = None) -> dict:
    """The training ground truth as pseudo-label rows (class, score 1, start_s, end_s)."""
    return {
        v.id: np.column_stack([v.labels, np.ones(len(v.labels)), v.segments])
        for v in data.train_videos()
        if v.id != drop
    }


def test_random_crop_keeps_half_covered_segments() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        length = int(rng.integers(50, 300))
        crop = int(rng.integers(10, length))
        starts = rng.uniform(-5, length, 6)
        segs = np.stack([starts, starts + rng.uniform(0.5, 60, 6)], axis=1)
        start, keep = random_crop(length, segs, crop, rng)
        assert 0 <= start <= length - crop
        inter = np.clip(
            np.minimum(segs[:, 1], start + crop) - np.maximum(segs[:, 0], start), 0, None
        )
        np.testing.assert_array_equal(keep, inter / (segs[:, 1] - segs[:, 0]) >= 0.5)


def test_random_crop_searches_for_a_window_with_a_segment() -> None:
    segs = np.array([[500.0, 504.0]])
    for seed in range(20):
        start, keep = random_crop(1000, segs, 100, np.random.default_rng(seed))
        assert keep.tolist() == [True]
        assert start <= 502 <= start + 100
    # a segment that no window can half-cover: nothing kept, still a valid window
    start, keep = random_crop(1000, np.array([[0.0, 900.0]]), 100, np.random.default_rng(0))
    assert keep.tolist() == [False] and 0 <= start <= 900
    start, keep = random_crop(10, np.zeros((0, 2)), 5, np.random.default_rng(0))
    assert keep.shape == (0,) and 0 <= start <= 5


def test_student_training_crop(student_view: StageData) -> None:
    videos = student_view.train_videos()
    targets = gt_targets(student_view)
    dataset = StudentVideos(student_view, videos, targets, train=True, max_seq_len=4096, seed=3)
    cropped = 0
    for key in range(4 * len(videos)):
        item = dataset[key]
        _, index = split_key(key, len(videos))
        video = videos[index]
        feats = student_view.features.load(video)
        length = feats.shape[0]
        crop = item["features"].shape[1]
        assert round(0.9 * length) <= crop <= length
        offset = item["offset"]
        np.testing.assert_array_equal(item["features"].numpy(), feats[offset : offset + crop].T)
        timing = student_view.features.timing(video, length)
        segs = seconds_to_grid(video.segments, timing)  # not clamped at 0 before cropping
        if crop == length:
            np.testing.assert_allclose(item["segments"].numpy(), segs, rtol=1e-6)
            continue
        cropped += 1
        inter = np.clip(
            np.minimum(segs[:, 1], offset + crop) - np.maximum(segs[:, 0], offset), 0, None
        )
        kept = inter / (segs[:, 1] - segs[:, 0]) >= 0.5
        expected = np.clip(segs[kept], offset, offset + crop) - offset
        np.testing.assert_allclose(item["segments"].numpy(), expected, rtol=1e-6, atol=1e-5)
        np.testing.assert_array_equal(item["labels"].numpy(), video.labels[kept])
        assert (item["segments"].numpy() >= 0).all() and (item["segments"].numpy() <= crop).all()
    assert cropped > 0


def test_student_crop_of_a_long_video_is_exactly_max_seq_len(student_view: StageData) -> None:
    """A video longer than max_seq_len gets a window of exactly max_seq_len steps (no ratio
    crop), also when 0.9 T is below max_seq_len; the features are not noised by the data."""
    videos = student_view.train_videos()
    lengths = [student_view.features.load(v).shape[0] for v in videos]
    index = int(np.argmax(lengths))
    max_len = int(0.95 * lengths[index])  # 0.9 T < max_len < T
    assert round(0.9 * lengths[index]) < max_len < lengths[index]
    dataset = StudentVideos(student_view, videos, None, train=True, max_seq_len=max_len, seed=0)
    for epoch in range(5):
        item = dataset[epoch * len(videos) + index]
        assert item["features"].shape == (16, max_len)
        clean = student_view.features.load(videos[index])
        offset = item["offset"]
        np.testing.assert_array_equal(item["features"].numpy(), clean[offset : offset + max_len].T)


def test_student_items_carry_the_ignored_regions_cropped_with_the_clip(
    student_view: StageData,
) -> None:
    """With ``ignore_score`` every training item carries the unfiltered pseudo labels scoring
    above it as ``ignore_segments`` (grid units, clipped to the crop, empty ones dropped),
    padded per batch with ``ignore_valid``; evaluation items carry none."""
    videos = student_view.train_videos()
    unfiltered = {
        v.id: np.array([[0, 0.9, 1.0, 0.6 * v.duration], [0, 0.3, 4.0, 6.0], [1, 0.7, 2.0, 2.0]])
        for v in videos
    }
    unfiltered[videos[0].id] = np.zeros((0, 4))
    dm = PseudoLabelDataModule(
        student_view,
        max_seq_len=4096,
        max_stride=32,
        targets=gt_targets(student_view),
        batch_size=len(videos),
        seed=3,
        ignore_score=0.5,
        unfiltered=unfiltered,
    )
    (batch,) = list(dm.train_dataloader())
    assert batch["ignore_segments"].shape == (len(videos), 1, 2)
    for row, vid in enumerate(batch["video_id"]):
        video = student_view.annotations.videos[vid]
        timing = student_view.features.timing(video, student_view.features.load(video).shape[0])
        offset, crop = int(batch["offset"][row]), int(batch["mask"][row].sum())
        if vid == videos[0].id:
            assert not batch["ignore_valid"][row].any()
            continue
        # the 0.9 row only: the 0.3 row scores under ignore_score, the 0.7 row has no length
        span = (
            np.clip(
                seconds_to_grid(np.array([1.0, 0.6 * video.duration]), timing),
                offset,
                offset + crop,
            )
            - offset
        )
        assert batch["ignore_valid"][row].tolist() == [True]
        np.testing.assert_allclose(batch["ignore_segments"][row, 0].numpy(), span, rtol=1e-5)
    assert "ignore_segments" not in next(iter(dm.val_dataloader()))
    plain = PseudoLabelDataModule(student_view, 4096, 32, gt_targets(student_view), seed=3)
    assert "ignore_segments" not in next(iter(plain.train_dataloader()))


def test_student_video_without_targets(student_view: StageData) -> None:
    victim = student_view.train_videos()[1].id
    targets = gt_targets(student_view, drop=victim)
    targets[student_view.train_videos()[2].id] = np.zeros((0, 4))
    dm = PseudoLabelDataModule(
        student_view, max_seq_len=512, max_stride=32, targets=targets, batch_size=8, seed=0
    )
    (batch,) = list(dm.train_dataloader())
    for vid in (victim, student_view.train_videos()[2].id):
        row = batch["video_id"].index(vid)
        assert not batch["target_valid"][row].any()
        assert batch["mask"][row].sum() > 0
        # the video-level label still comes from the annotations
        assert batch["video_labels"][row].sum() >= 1


def test_student_batches_padding_and_mask(student_view: StageData) -> None:
    dm = PseudoLabelDataModule(
        student_view,
        max_seq_len=512,
        max_stride=32,
        targets=gt_targets(student_view),
        batch_size=3,
        eval_batch_size=3,
        seed=0,
    )
    train = list(dm.train_dataloader())
    assert [len(b["video_id"]) for b in train] == [3, 3, 2]
    for batch in train:
        assert batch["features"].shape[1:] == (16, 512)
        assert batch["mask"].shape == (len(batch["video_id"]), 512)
        lengths = batch["mask"].sum(1)
        for i in range(len(lengths)):
            assert batch["mask"][i, : lengths[i]].all()
            assert (batch["features"][i, :, lengths[i] :] == 0).all()
        assert batch["video_labels"].shape == (len(batch["video_id"]), 3)
    # inference pads to a multiple of the largest stride (max_seq_len below every test length)
    dm = PseudoLabelDataModule(student_view, 128, 32, eval_batch_size=3)
    evaluation = list(dm.val_dataloader())
    assert [v for b in evaluation for v in b["video_id"]] == [v.id for v in dm.videos["test"]]
    for batch in evaluation:
        lengths = [
            student_view.features.load(student_view.annotations.videos[v]).shape[0]
            for v in batch["video_id"]
        ]
        width = batch["features"].shape[2]
        assert min(lengths) > 128
        assert width == math.ceil(max(lengths) / 32) * 32
        assert batch["mask"].sum(1).tolist() == lengths
        assert batch["offset"].tolist() == [0] * len(lengths)
        for i, vid in enumerate(batch["video_id"]):
            video = student_view.annotations.videos[vid]
            timing = student_view.features.timing(video, lengths[i])
            valid = batch["target_valid"][i]
            np.testing.assert_allclose(
                batch["segments"][i][valid].numpy(),
                seconds_to_grid(video.segments, timing),
                rtol=1e-6,
            )
            assert batch["stride_s"][i].item() == pytest.approx(4 / video.fps)
            assert batch["duration"][i].item() == video.duration


# ---------------------------------------------------------------- sampler


def keys(sampler: EpochSampler) -> list[int]:
    return list(iter(sampler))


def test_epoch_sampler_determinism() -> None:
    n = 23
    a, b = EpochSampler(n, seed=4), EpochSampler(n, seed=4)
    a.set_epoch(3)
    b.set_epoch(3)
    assert keys(a) == keys(b)
    assert sorted(k - 3 * n for k in keys(a)) == list(range(n))
    assert all(split_key(k, n)[0] == 3 for k in keys(a))
    order3 = [split_key(k, n)[1] for k in keys(a)]
    a.set_epoch(4)
    order4 = [split_key(k, n)[1] for k in keys(a)]
    assert order3 != order4 and sorted(order4) == list(range(n))
    other = EpochSampler(n, seed=5)
    other.set_epoch(3)
    assert [split_key(k, n)[1] for k in keys(other)] != order3
    assert keys(EpochSampler(n, shuffle=False)) == list(range(n))
    assert len(a) == n


@pytest.mark.parametrize("n", [7, 8, 1])
def test_epoch_sampler_shards_evaluation_exactly_once(
    n: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    shards = []
    for rank in range(2):
        monkeypatch.setattr(sampling, "world", lambda rank=rank: (rank, 2))
        sampler = EpochSampler(n, seed=0, shuffle=False)
        shards.append(keys(sampler))
        assert len(sampler) == len(shards[-1])
    merged = shards[0] + shards[1]
    assert sorted(merged) == list(range(n))


def test_epoch_sampler_shards_training_equally(monkeypatch: pytest.MonkeyPatch) -> None:
    n = 7
    shards = []
    for rank in range(2):
        monkeypatch.setattr(sampling, "world", lambda rank=rank: (rank, 2))
        sampler = EpochSampler(n, seed=2)
        sampler.set_epoch(1)
        shards.append([split_key(k, n)[1] for k in keys(sampler)])
        assert len(sampler) == len(shards[-1]) == 4
    assert set(shards[0]) | set(shards[1]) == set(range(n))
    monkeypatch.setattr(sampling, "world", lambda: (0, 1))
    single = EpochSampler(n, seed=2)
    single.set_epoch(1)
    order = [split_key(k, n)[1] for k in keys(single)]
    # both ranks shard the one permutation every rank agrees on
    padded = order + order[:1]
    assert shards[0] == padded[0::2] and shards[1] == padded[1::2]


def test_evaluation_loader_shards_videos(
    generator_view: StageData, monkeypatch: pytest.MonkeyPatch
) -> None:
    dm = GeneratorDataModule(generator_view, num_segments=20, eval_batch_size=2)
    seen = []
    for rank in range(2):
        monkeypatch.setattr(sampling, "world", lambda rank=rank: (rank, 2))
        seen += [v for batch in dm.loader("train") for v in batch["video_id"]]
    assert sorted(seen) == sorted(v.id for v in generator_view.train_videos())


def test_detections_to_seconds_keeps_zero_length_detections() -> None:
    """Detections past the video's end become zero-length by the clipping and are kept (the
    research evaluation counts them as false positives)."""
    from fustal.data.features import Timing, detections_to_seconds

    rows = np.array([[1, 0.9, 2.0, 6.0], [0, 0.5, 40.0, 44.0], [2, 0.3, -5.0, -3.0]])
    out = detections_to_seconds(rows, offset=10, timing=Timing(0.5, 1.0), duration=20.0)
    np.testing.assert_allclose(out, [[1, 0.9, 6.5, 8.5], [0, 0.5, 20.0, 20.0], [2, 0.3, 3.0, 4.0]])
    assert len(out) == len(rows)


def test_epoch_sampler_skips_the_batches_a_restored_run_did_once() -> None:
    """A checkpoint taken 2 batches into epoch 3 resumes there: the sampler skips those batches
    of that epoch only (Lightning restarts the epoch's data from its first batch)."""
    from fustal.data.sampling import ResumePoint

    full = EpochSampler(10, seed=4, shuffle=True)
    full.set_epoch(3)
    expected = list(full)
    resume = ResumePoint()
    resume.load({"epoch": 3, "batches": 2})
    sampler = EpochSampler(10, seed=4, shuffle=True, resume=resume, batch_size=3)
    sampler.set_epoch(3)
    assert list(sampler) == expected[6:]
    assert list(sampler) == expected  # once
    sampler.set_epoch(4)
    full.set_epoch(4)
    assert list(sampler) == list(full)


# ---------------------------------------------------------------- custom datasets


def write_csv_dataset(root: Path) -> None:
    """Two training videos and a test video without actions, in CSV form."""
    (root / "annotations.csv").write_text(
        "video,subset,label,start,end\n"
        "a,train,wave,1.0,2.5\n"
        "a,train,jump,4,6\n"
        "b,train,jump,0.5,30\n"
        "c,test,,,\n"
    )
    (root / "videos.csv").write_text("video,duration,fps\na,10,30\nb,20.5,\nc,8,25\nunused,1,1\n")


def test_csv_annotations(tmp_path: Path) -> None:
    write_csv_dataset(tmp_path)
    ann = load_annotations(tmp_path / "annotations.csv", video_table=tmp_path / "videos.csv")
    assert ann.classes == ["jump", "wave"] and ann.subsets == ["test", "train"]
    assert list(ann.videos) == ["a", "b", "c"]
    a, b, c = ann.videos.values()
    np.testing.assert_allclose(a.segments, [[1.0, 2.5], [4.0, 6.0]])
    assert a.labels.tolist() == [1, 0] and (a.duration, a.fps) == (10.0, 30.0)
    assert (b.fps, b.segments.tolist()) == (None, [[0.5, 20.5]])  # clipped to the duration
    assert c.num_segments == 0 and c.subset == "test"


@pytest.mark.parametrize(
    ("annotations", "table", "needle"),
    [
        ("video,subset,label,start\n", None, "expected the header video,subset,label,start,end"),
        ("video,subset,label,start,end\na,train,wave,1\n", None, "line 2: expected 5 fields"),
        ("video,subset,label,start,end\na,train,wave,1,\n", None, "video a: label, start and end"),
        ("video,subset,label,start,end\nz,train,wave,1,2\n", None, "line 2: video z: not in"),
        (
            "video,subset,label,start,end\na,train,wave,1,2\na,test,wave,3,4\n",
            None,
            "line 3: video a: in the subsets 'train' and 'test'",
        ),
        (
            "video,subset,label,start,end\na,train,wave,1,2\n",
            "video,duration,fps\na,10,30\na,11,30\n",
            "videos.csv: line 3: video a: listed twice",
        ),
        (
            "video,subset,label,start,end\na,train,wave,1,2\n",
            "video,duration,fps\na,10,fast\n",
            "videos.csv: line 2: video a: fps: not a number: 'fast'",
        ),
    ],
)
def test_bad_csv_annotations(
    tmp_path: Path, annotations: str, table: str | None, needle: str
) -> None:
    write_csv_dataset(tmp_path)
    (tmp_path / "annotations.csv").write_text(annotations)
    if table is not None:
        (tmp_path / "videos.csv").write_text(table)
    with pytest.raises(FustalError, match=re.escape(needle)):
        load_annotations(tmp_path / "annotations.csv", video_table=tmp_path / "videos.csv")


def test_csv_annotations_need_a_video_table(tmp_path: Path) -> None:
    write_csv_dataset(tmp_path)
    with pytest.raises(FustalError, match="need a video table"):
        load_annotations(tmp_path / "annotations.csv")


def custom_features(root: Path, sidecar: dict | None) -> ViewConfig:
    """``features/`` of the CSV dataset (with ``sidecar``); the ``custom`` features config."""
    (root / "features").mkdir()
    for vid, steps in (("a", 30), ("b", 60), ("c", 20)):
        np.save(root / "features" / f"{vid}.npy", np.ones((steps, 5), np.float32))
    if sidecar is not None:
        (root / "features" / "features.json").write_text(json.dumps(sidecar))
    return features_cfg("custom")


def test_sidecar_fills_the_timing(tmp_path: Path) -> None:
    write_csv_dataset(tmp_path)
    sidecar = {"fps": 10, "window_frames": 8, "stride_frames": 4, "extractor": {"backbone": "x"}}
    cfg = custom_features(tmp_path, sidecar)
    data = load_stage_data(DatasetConfig(str(tmp_path)), cfg)
    spec = data.features
    assert (spec.fps, spec.window_frames, spec.stride_frames) == (10, 8, 4)
    assert spec.extractor == {"backbone": "x"}
    assert spec.sidecar == tmp_path / "features" / "features.json"
    assert spec.timing(data.train_videos()[0], 30) == Timing(0.4, 0.8)
    # a value set in the config must agree with the sidecar
    same = FeatureSpec.from_config(replace(cfg, stride_frames=4), tmp_path)
    assert same.stride_frames == 4
    with pytest.raises(FustalError, match=r"features.fps: 25 disagrees with fps 10.0 in .*json"):
        FeatureSpec.from_config(replace(cfg, fps=25), tmp_path)


def test_sidecar_in_seconds_and_per_video_fps(tmp_path: Path) -> None:
    write_csv_dataset(tmp_path)
    cfg = custom_features(tmp_path, {"step_seconds": 0.5, "window_seconds": 1.5})
    spec = FeatureSpec.from_config(cfg, tmp_path)
    video = load_stage_data(DatasetConfig(str(tmp_path)), cfg).train_videos()[0]
    assert spec.timing(video, 30) == Timing(0.5, 1.5)
    (tmp_path / "features" / "features.json").write_text(
        '{"window_frames": 16, "stride_frames": 4}'
    )
    spec = FeatureSpec.from_config(cfg, tmp_path)
    assert spec.fps is None and spec.timing(video, 30) == Timing(4 / 30, 16 / 30)


@pytest.mark.parametrize(
    ("sidecar", "needle"),
    [
        ({"fps": 10, "window_frames": 8}, "stride_frames: expected a positive number, got None"),
        ({"fps": 10, "window_frames": 8, "stride_frames": 0}, "stride_frames: expected a positive"),
        ({"step_seconds": 1, "fps": 10}, "give either fps"),
        ({"fps": 10, "window_frames": 8, "stride_frames": 4, "hop": 2}, "unknown key 'hop'"),
        ({"step_seconds": 1, "extractor": "i3d"}, "extractor: expected an object"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_bad_sidecar(tmp_path: Path, sidecar: object, needle: str) -> None:
    write_csv_dataset(tmp_path)
    cfg = custom_features(tmp_path, sidecar)
    with pytest.raises(FustalError, match=re.escape(needle)) as err:
        FeatureSpec.from_config(cfg, tmp_path)
    assert str(tmp_path / "features" / "features.json") in str(err.value)


def test_timing_needs_config_or_sidecar(tmp_path: Path) -> None:
    write_csv_dataset(tmp_path)
    cfg = custom_features(tmp_path, None)
    with pytest.raises(FustalError, match="features.window_frames: not set, and the sidecar"):
        FeatureSpec.from_config(cfg, tmp_path)
    spec = FeatureSpec.from_config(replace(cfg, window_frames=8, stride_frames=8), tmp_path)
    assert spec.sidecar is None and spec.fps is None


def test_missing_inputs_are_listed_together(tmp_path: Path) -> None:
    cfg = features_cfg("custom")
    with pytest.raises(FustalError) as err:
        load_stage_data(DatasetConfig(str(tmp_path)), cfg)
    message = str(err.value)
    assert message.startswith(f"dataset.root {tmp_path}: 3 inputs missing: ")
    for path in ("annotations.csv", "videos.csv", "features"):
        assert str(tmp_path / path) in message


def test_skip_missing_leaving_no_video_is_an_error(tmp_path: Path) -> None:
    write_csv_dataset(tmp_path)
    cfg = custom_features(tmp_path, {"fps": 10, "window_frames": 8, "stride_frames": 4})
    (tmp_path / "features" / "c.npy").unlink()
    with pytest.raises(FustalError, match="1 of 3 videos lack them, first: video c"):
        load_stage_data(DatasetConfig(str(tmp_path)), cfg)
    with pytest.raises(FustalError, match="no 'test' video of .* is left \\(all 1 skipped"):
        load_stage_data(DatasetConfig(str(tmp_path), skip_missing=True), cfg, validate=False)
