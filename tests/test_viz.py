"""Pictures: timeline and precision/recall plots on synthetic arrays, and the pictures of a tiny
``python -m fustal.train`` run (files, TensorBoard images, redraw by ``scripts/plot_run.py``)."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from fustal.errors import FustalError
from fustal.metrics.detection import Detections
from fustal.metrics.quality import pseudo_label_quality
from fustal.viz.pr import PR_TIOU, plot_precision_recall, pr_summary, precision_recall
from fustal.viz.rundir import (
    PICTURES,
    draw_run,
    entries_to_track,
    read_cas,
    timeline_name,
    write_cas,
)
from fustal.viz.timeline import Track, plot_timeline, shown_classes
from tests.conftest import DebugRun, train

REPO_ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["jump", "run", "swim", "throw", "walk"]


def check_png(path: Path) -> np.ndarray:
    """Assert ``path`` is a non-trivial PNG; return its pixels ``[H, W, C]``."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    image = imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4) and min(image.shape[:2]) >= 100
    return image


def test_plot_timeline_with_every_row(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    cas = rng.random((80, len(CLASSES)))
    tracks = [
        Track("ground truth", [[3.0, 10.0], [20.0, 30.0]], [1, 3]),
        Track("raw", rng.uniform(0, 40, (60, 2)).cumsum(1), rng.integers(0, 5, 60), rng.random(60)),
        Track("student", np.zeros((0, 2)), np.zeros(0), np.zeros(0)),
    ]
    path = plot_timeline(
        tmp_path / "t.png", "video_1", CLASSES, tracks, cas, cas.sum(1), 0.5, duration=45.0
    )
    image = check_png(path)
    assert image.shape[1] == 1200  # 12 in at 100 dpi
    assert [p.name for p in tmp_path.iterdir()] == ["t.png"]  # no temp file left


def test_plot_timeline_without_generator_outputs(tmp_path: Path) -> None:
    tracks = [Track("ground truth", np.zeros((0, 2)), np.zeros(0))]
    check_png(plot_timeline(tmp_path / "t.png", "empty", CLASSES, tracks))
    with pytest.raises(ValueError, match="seconds_per_step"):
        plot_timeline(tmp_path / "u.png", "x", CLASSES, tracks, cas=np.ones((4, 5)))


def test_shown_classes_ground_truth_first_then_by_score_in_index_order() -> None:
    gt = Track("gt", [[0, 1], [2, 3]], [4, 1])
    pred = Track("pred", [[0, 1]] * 4, [2, 4, 0, 2], [0.3, 0.9, 0.5, 0.8])
    assert shown_classes([gt, pred]).tolist() == [0, 1, 2, 4]
    assert shown_classes([gt, pred], limit=3).tolist() == [1, 2, 4]  # gt 1, 4, then best: 2
    assert shown_classes([], fallback=np.array([0.1, 0.7, 0.2])).tolist() == [1]


def test_precision_recall_by_hand_and_against_quality() -> None:
    gt = Detections(video=[0, 0], label=[0, 1], segment=[[0, 10], [20, 30]])
    # tIoU with GT 0: 1.0, 0.5 (duplicate: one-to-one matching counts one), 0.3; wrong class
    pred = Detections(
        video=[0, 0, 0, 0],
        label=[0, 0, 0, 0],
        segment=[[0, 10], [0, 5], [0, 3], [20, 30]],
        score=[0.9, 0.8, 0.7, 0.6],
    )
    precision, recall = precision_recall(gt, pred, [0.2, 0.5, 0.9], 2)
    np.testing.assert_allclose(precision, [0.25, 0.25, 0.25])
    np.testing.assert_allclose(recall, [0.5, 0.5, 0.5])
    quality = pseudo_label_quality(gt, pred, 2, [0.5])
    assert (precision[1], recall[1]) == (quality["precision@0.5"], quality["recall@0.5"])
    empty = Detections(video=[], label=[], segment=np.zeros((0, 2)), score=[])
    assert precision_recall(gt, empty, [0.5], 2)[0].tolist() == [0.0]
    summary = pr_summary(gt, {"raw": pred, "filtered": empty}, 2)
    assert summary["tiou"] == list(PR_TIOU) and summary["num_gt"] == 2
    assert summary["curves"]["filtered"]["count"] == 0


def test_plot_precision_recall(tmp_path: Path) -> None:
    x = np.asarray(PR_TIOU)
    curves = {"raw": (0.1 * (1 - x), 1 - x), "filtered": (0.4 * (1 - x), 0.6 * (1 - x))}
    check_png(plot_precision_recall(tmp_path / "pr.png", x, curves, {"raw": 90, "filtered": 9}))


def test_cas_roundtrip_and_track_entries(tmp_path: Path) -> None:
    per_video = {
        "v/1": {"cas": np.ones((5, 3)), "actionness": np.arange(5.0), "seconds_per_step": 0.25}
    }
    write_cas(tmp_path / "cas.npz", per_video)
    back = read_cas(tmp_path / "cas.npz")
    assert list(back) == ["v/1"] and back["v/1"]["seconds_per_step"] == 0.25
    np.testing.assert_array_equal(back["v/1"]["actionness"], np.arange(5.0))
    assert timeline_name("v/1 a") == "timeline_v_1_a.png"
    track = entries_to_track("p", [{"label": "run", "segment": [1, 2], "score": 0.5}], CLASSES)
    assert track.labels.tolist() == [1] and track.scores.tolist() == [0.5]
    assert entries_to_track("gt", [{"label": "run", "segment": [1, 2]}], CLASSES).scores is None
    with pytest.raises(FustalError, match="unknown class 'fly'"):
        entries_to_track("p", [{"label": "fly", "segment": [1, 2]}], CLASSES)
    with pytest.raises(FustalError, match="picture inputs not found"):
        draw_run(tmp_path)


def plot_run(run_dir: Path) -> int:
    """``python scripts/plot_run.py RUN_DIR``'s main in this process; returns its exit code."""
    script = runpy.run_path(str(REPO_ROOT / "scripts" / "plot_run.py"), run_name="plot_run")
    try:
        script["main"]([str(run_dir)])
    except SystemExit as stop:
        return int(stop.code or 0)
    return 0


def test_train_run_draws_logs_and_redraws_pictures(tmp_path: Path, debug_run: DebugRun) -> None:
    """Pictures of a run whose stages come from the cache (what they show is stored with the
    stages, whatever ``plot_videos`` is)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = debug_run.seed(tmp_path)
    train(tmp_path, "plot_videos=2", "logger=tensorboard", data)
    run = tmp_path / "run"
    pictures = run / PICTURES
    inputs = json.loads((pictures / "inputs.json").read_text())
    root = next((debug_run.data / "synthetic").iterdir())
    train_ids = sorted((root / "split_train.txt").read_text().split())[:2]
    test_ids = sorted((root / "split_test.txt").read_text().split())[:2]
    assert [v["id"] for v in inputs["videos"]] == train_ids + test_ids
    assert [v["subset"] for v in inputs["videos"]] == ["train"] * 2 + ["test"] * 2
    assert list(inputs["videos"][0]["tracks"]) == [
        "ground truth",
        "pseudo labels (raw)",
        "pseudo labels (filtered)",
        "student + EMA",
    ]
    assert list(inputs["videos"][2]["tracks"]) == ["ground truth", "generator", "student + EMA"]
    assert set(read_cas(pictures / "cas.npz")) == set(train_ids + test_ids)
    metrics = json.loads((run / "metrics.json").read_text())["pseudo_labels"]
    curves = inputs["pseudo_label_pr"]["curves"]
    at = inputs["pseudo_label_pr"]["tiou"].index(0.5)
    for key in ("raw", "filtered"):
        assert curves[key]["count"] == metrics[key]["count"]
        assert curves[key]["precision"][at] == pytest.approx(metrics[key]["precision@0.5"])
        assert curves[key]["recall"][at] == pytest.approx(metrics[key]["recall@0.5"])
    names = [timeline_name(v) for v in train_ids + test_ids] + ["pseudo_label_pr.png"]
    drawn = {name: (pictures / name).read_bytes() for name in names}
    for name in names:
        check_png(pictures / name)

    events = EventAccumulator(str(run / "tensorboard" / "summary"), {"images": 0})
    events.Reload()
    assert sorted(events.Tags()["images"]) == sorted(f"pictures/{Path(n).stem}" for n in names)

    for name in names:
        (pictures / name).unlink()
    assert plot_run(run) == 0
    assert {name: (pictures / name).read_bytes() for name in names} == drawn
    assert plot_run(tmp_path / "missing") == 2

    gen = tmp_path / "gen"
    train(tmp_path, "stage=generator", "plot_videos=1", data, f"paths.output_dir={gen}")
    inputs = json.loads((gen / PICTURES / "inputs.json").read_text())
    assert list(inputs["videos"][0]["tracks"]) == ["ground truth", "pseudo labels (raw)"]
    assert list(inputs["videos"][1]["tracks"]) == ["ground truth", "generator"]
    assert list(inputs["pseudo_label_pr"]["curves"]) == ["raw"]
    check_png(gen / PICTURES / timeline_name(train_ids[0]))

    train(
        tmp_path, "stage=generator", "plot_videos=0", data, f"paths.output_dir={tmp_path / 'off'}"
    )
    assert not (tmp_path / "off" / PICTURES).exists()
