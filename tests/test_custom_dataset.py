"""``+experiment=custom``: a dataset of one CSV annotation file, a video table and one folder of
``[T, D]`` features with a ``features.json`` sidecar, trained on by both stages in process, then
``fustal.predict`` on its features, and predict's refusal of features on another time scale."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from fustal.data.views import load_pipeline_data
from fustal.pipeline.keys import features_identity
from fustal.pipeline.run import run_pipeline
from tests.conftest import compose_train
from tests.test_entry_points import assert_exit_2, check_results, predict

CLASSES = ["jump", "run", "throw", "wave"]
DIM = 24
FPS, WINDOW, STRIDE = 12.0, 6, 3  # a step every 0.25 s
TRAIN, TEST = 8, 4


@dataclass
class Custom:
    """A finished pipeline run on the custom dataset at ``root``."""

    tmp: Path
    root: Path
    metrics: dict
    student: Path
    generator: Path
    durations: dict[str, float]


def steps_of(duration: float) -> int:
    """Feature steps of a video: 6-frame windows every 3 frames at 12 fps."""
    return (int(duration * FPS) - WINDOW) // STRIDE + 1


def write_custom(root: Path, seed: int = 0) -> dict[str, float]:
    """A custom dataset: ``annotations.csv``, ``videos.csv`` and ``features/`` (with its sidecar)
    of 8 training and 4 test videos of 12-18 s; class signal inside the actions. The last test
    video has no action (an empty row). Returns the durations."""
    rng = np.random.default_rng(seed)
    prototypes = rng.normal(size=(len(CLASSES), DIM))
    (root / "features").mkdir(parents=True)
    rows, table, durations = ["video,subset,label,start,end"], ["video,duration,fps"], {}
    for i in range(TRAIN + TEST):
        subset = "train" if i < TRAIN else "test"
        vid = f"{subset}_{i:02d}"
        duration = float(rng.uniform(12.0, 18.0))
        steps = steps_of(duration)
        feats = rng.normal(scale=0.5, size=(steps, DIM))
        centres = (np.arange(steps) * STRIDE + WINDOW / 2) / FPS
        actions = [(i % len(CLASSES), 2.0 + i % 3, 6.5 + i % 3)]
        if i % 2:
            actions.append(((i + 1) % len(CLASSES), 9.0, 11.5))
        if i == TRAIN + TEST - 1:
            actions = []
        for label, start, end in actions:
            feats[(centres >= start) & (centres < end)] += 2.0 * prototypes[label]
            rows.append(f"{vid},{subset},{CLASSES[label]},{start},{end}")
        if not actions:
            rows.append(f"{vid},{subset},,,")
        np.save(root / "features" / f"{vid}.npy", feats.astype(np.float32))
        table.append(f"{vid},{duration:.3f},{'' if i % 3 else '30'}")
        durations[vid] = round(duration, 3)
    (root / "annotations.csv").write_text("\n".join(rows) + "\n")
    (root / "videos.csv").write_text("\n".join(table) + "\n")
    sidecar = {"fps": FPS, "window_frames": WINDOW, "stride_frames": STRIDE}
    (root / "features" / "features.json").write_text(json.dumps(sidecar))
    return durations


def custom_overrides(root: Path) -> list[str]:
    return ["+experiment=custom", f"dataset.root={root}", "plot_videos=0", "ema.decay=0.5"]


@pytest.fixture(scope="module")
def custom(tmp_path_factory: pytest.TempPathFactory) -> Custom:
    tmp = tmp_path_factory.mktemp("custom")
    root = tmp / "my_dataset"
    durations = write_custom(root)
    metrics = run_pipeline(compose_train(tmp, *custom_overrides(root)))
    (student,) = (tmp / "cache" / "student").glob("*/student.ckpt")
    (generator,) = (tmp / "cache" / "generator").glob("*/generator.ckpt")
    return Custom(tmp, root, metrics, student, generator, durations)


def test_both_stages_read_the_one_view(tmp_path: Path) -> None:
    root = tmp_path / "my_dataset"
    write_custom(root)
    cfg = compose_train(tmp_path, *custom_overrides(root))
    data = load_pipeline_data(cfg)
    for view in (data.generator, data.student):
        assert view.classes == CLASSES
        assert len(view.train_videos()) == TRAIN and len(view.test_videos()) == TEST
        assert view.feature_dim() == DIM
        timing = view.features.timing(view.test_videos()[0], 10)
        assert (timing.stride_s, timing.window_s) == (STRIDE / FPS, WINDOW / FPS)
    assert data.student.test_videos()[-1].num_segments == 0
    # the sidecar's values are in the stages' cache keys; the config stays as composed
    student = features_identity(cfg.features.student, data.student.features)
    generator = features_identity(cfg.features.generator, data.generator.features)
    assert student["stride_frames"] == STRIDE and generator["fps"] == FPS
    assert cfg.features.student.stride_frames is None and cfg.dataset.root == str(root)


def test_pipeline_on_a_custom_dataset(custom: Custom) -> None:
    for section in ("generator", "student"):
        assert set(custom.metrics[section]["test"]) >= {"mAP@0.5", "avg"}
    timing = torch.load(custom.generator, weights_only=True)["hyper_parameters"]["feature_timing"]
    assert (timing["fps"], timing["window_frames"], timing["stride_frames"]) == (FPS, 6, 3)
    assert timing["layout"] == "overlap" and timing["extractor"] is None


@pytest.mark.parametrize("kind", ["student", "generator"])
def test_predict_on_custom_features(custom: Custom, tmp_path: Path, kind: str) -> None:
    features = tmp_path / "features"
    features.mkdir()
    tests = [vid for vid in custom.durations if vid.startswith("test")]
    for name in [*[f"{vid}.npy" for vid in tests], "features.json"]:
        shutil.copy(custom.root / "features" / name, features / name)
    durations = tmp_path / "durations.json"
    durations.write_text(json.dumps({vid: custom.durations[vid] for vid in tests}))
    out = tmp_path / "detections.json"
    ckpt = custom.student if kind == "student" else custom.generator
    predict(f"ckpt_path={ckpt}", f"features={features}", f"out={out}", f"durations={durations}")
    check_results(out, CLASSES, {vid: custom.durations[vid] for vid in tests})


def write_features(folder: Path, steps: int, sidecar: dict | None = None) -> Path:
    folder.mkdir()
    np.save(folder / "clip.npy", np.zeros((steps, DIM), np.float32))
    if sidecar is not None:
        (folder / "features.json").write_text(json.dumps(sidecar))
    return folder


@pytest.mark.parametrize(
    ("sidecar", "needle"),
    [
        ({"fps": 30.0, "window_frames": 16, "stride_frames": 4}, "4 frames at 30 fps"),
        ({"step_seconds": 0.2, "window_seconds": 0.5}, "(0.2 s per step)"),
        (
            {"fps": FPS, "window_frames": WINDOW, "stride_frames": STRIDE, "extractor": {"x": 1}},
            "the extractor {'x': 1}",
        ),
    ],
    ids=["other step", "seconds", "other extractor"],
)
def test_predict_refuses_a_sidecar_of_other_features(
    custom: Custom, tmp_path: Path, capsys: pytest.CaptureFixture, sidecar: dict, needle: str
) -> None:
    features = write_features(tmp_path / "features", 40, sidecar)
    out = tmp_path / "detections.json"
    for ckpt in (custom.generator, custom.student):
        overrides = (f"ckpt_path={ckpt}", f"features={features}", f"out={out}")
        names = (str(features / "features.json"), str(ckpt), needle, "(0.25 s per step)")
        assert_exit_2(capsys, lambda o=overrides: predict(*o), *names)
        assert not out.exists()


def test_predict_refuses_durations_the_steps_cannot_span(
    custom: Custom, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The generator was trained on 0.25 s steps: 400 steps span 100 s, not 20 s (features of a
    5x finer step) nor 500 s."""
    features = write_features(tmp_path / "features", 400)
    out = tmp_path / "detections.json"
    for seconds in (20.0, 500.0):
        durations = tmp_path / "durations.json"
        durations.write_text(json.dumps({"clip": seconds}))
        overrides = (
            f"ckpt_path={custom.generator}",
            f"features={features}",
            f"out={out}",
            f"durations={durations}",
        )
        needles = (str(features / "clip.npy"), "400 feature steps of 0.25 s", f"{seconds:.1f} s")
        assert_exit_2(capsys, lambda o=overrides: predict(*o), *needles)
        assert not out.exists()
    durations.write_text(json.dumps({"clip": 101.0}))
    predict(*overrides)
    assert out.is_file()
