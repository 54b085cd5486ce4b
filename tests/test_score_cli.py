"""``python -m fustal.score`` on the real THUMOS'14 annotation files, each run forked from the
test process's server (:func:`tests.conftest.forked`)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fustal.data.annotations import load_annotations
from fustal.metrics.detection import detection_map
from fustal.metrics.results import gt_to_detections, results_to_detections
from tests.conftest import Forkserver

ROOT = Path(__file__).resolve().parents[1]
ANNOTATIONS = ROOT / "data/annotations/thumos14"


@pytest.fixture
def run_score(forked: Forkserver) -> Callable[..., subprocess.CompletedProcess]:
    """``python -m fustal.score ARGS`` (forked) from the repository root."""
    return lambda *args: forked("score", *map(str, args), cwd=ROOT)


@pytest.fixture(scope="module")
def noisy_results(tmp_path_factory) -> Path:
    """GT of the gt.json test subset, jittered and rescored, plus false positives."""
    annotations = load_annotations(ANNOTATIONS / "gt.json")
    rng = np.random.default_rng(0)
    results = {}
    for video in annotations.subset("test"):
        shift = rng.normal(0.0, 1.0, video.segments.shape)
        rows = [
            {"label": annotations.classes[c], "score": float(s), "segment": seg}
            for c, s, seg in zip(
                video.labels,
                rng.random(len(video.labels)),
                (video.segments + shift).tolist(),
                strict=True,
            )
        ]
        rows.append({"label": annotations.classes[0], "score": 0.99, "segment": [0.0, 3.0]})
        results[video.id] = rows
    results["not_a_test_video"] = [
        {"label": annotations.classes[1], "score": 1.0, "segment": [0, 5]}
    ]
    path = tmp_path_factory.mktemp("score") / "results.json"
    path.write_text(json.dumps({"version": "test", "results": results}))
    return path


def test_json_output_matches_in_process_map(run_score, noisy_results):
    proc = run_score(ANNOTATIONS / "gt.json", noisy_results, "--subset", "test", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert list(out) == [f"mAP@0.{i}" for i in range(1, 8)] + ["avg"]

    annotations = load_annotations(ANNOTATIONS / "gt.json", clip_to_duration=False)
    gt, ids = gt_to_detections(annotations.subset("test"))
    results = json.loads(noisy_results.read_text())
    pred = results_to_detections(results, annotations.classes, ids)
    expected = detection_map(gt, pred, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], 20)
    assert out == pytest.approx(expected, abs=1e-12)
    assert 0.0 < out["mAP@0.7"] < out["mAP@0.1"] < 1.0


def test_custom_thresholds_and_table(run_score, noisy_results):
    proc = run_score(ANNOTATIONS / "gt.json", noisy_results, "--tiou", "0.3", "0.55", "--json")
    assert proc.returncode == 0, proc.stderr
    assert list(json.loads(proc.stdout)) == ["mAP@0.3", "mAP@0.55", "avg"]
    table = run_score(ANNOTATIONS / "gt.json", noisy_results)
    assert table.returncode == 0, table.stderr
    assert "avg" in table.stdout and "0.7" in table.stdout


def test_activitynet_schema_perfect_predictions(run_score, tmp_path):
    annotations = load_annotations(ANNOTATIONS / "thumos14.json", clip_to_duration=False)
    results = {
        v.id: [
            {"label": annotations.classes[c], "score": 1.0, "segment": seg}
            for c, seg in zip(v.labels.tolist(), v.segments.tolist(), strict=True)
        ]
        for v in annotations.subset("test")
    }
    path = tmp_path / "perfect.json"
    path.write_text(json.dumps({"results": results}))
    proc = run_score(ANNOTATIONS / "thumos14.json", path, "--subset", "Test", "--json")
    assert proc.returncode == 0, proc.stderr
    assert set(json.loads(proc.stdout).values()) == {1.0}


@pytest.mark.parametrize(
    ("pred_content", "extra", "message"),
    [
        (None, [], "not found"),
        ("{broken", [], "not valid JSON"),
        ('{"results": {"v": [{"label": "x"}]}}', [], "video v"),
        ('{"results": {}}', ["--subset", "nope"], "unknown subset"),
        ('{"results": {}}', ["--tiou", "1.5"], "tiou"),
    ],
)
def test_bad_input_exits_2_with_one_line(run_score, tmp_path, pred_content, extra, message):
    path = tmp_path / "pred.json"
    if pred_content is not None:
        path.write_text(pred_content)
    proc = run_score(ANNOTATIONS / "gt.json", path, *extra)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert proc.stdout == ""


def test_results_on_other_videos_exit_2_and_partial_overlap_warns(
    run_score, tmp_path, noisy_results
):
    other = tmp_path / "other.json"
    entry = {"label": "BaseballPitch", "score": 0.5, "segment": [0, 1]}
    other.write_text(json.dumps({"results": {"video_validation_0000051": [entry]}}))
    proc = run_score(ANNOTATIONS / "gt.json", other)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "none of its 1 videos is in the 'test' subset" in lines[0]

    partial = tmp_path / "partial.json"
    results = json.loads(noisy_results.read_text())["results"]
    kept = dict(list(results.items())[:5])
    partial.write_text(json.dumps({"results": kept}))
    proc = run_score(ANNOTATIONS / "gt.json", partial, "--json")
    assert proc.returncode == 0
    assert "warning:" in proc.stderr and "count as misses" in proc.stderr
    assert json.loads(proc.stdout)["avg"] < 0.1
