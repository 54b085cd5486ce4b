"""``python -m fustal.evaluate`` and ``python -m fustal.predict`` as a user runs them (forked
processes and in process, real Hydra, real files) on the checkpoints of one tiny pipeline run."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize

from tests.conftest import DEBUG, DebugRun, Forkserver, compose_train, user_env

MAX_SEQ_LEN = 320  # student.module.net.max_seq_len of conf/debug/default.yaml


@dataclass
class Pipeline:
    """One finished pipeline run (in process): its dirs, metrics and stage checkpoints."""

    tmp: Path
    data: Path
    metrics: dict
    student: Path
    generator: Path
    data_root: Path


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, debug_run: DebugRun) -> Pipeline:
    """The shared debug run, its cache copied (evaluation writes beside its entries)."""
    tmp = tmp_path_factory.mktemp("entry_points")
    debug_run.seed(tmp)
    (student,) = (tmp / "cache" / "student").glob("*/student.ckpt")
    (generator,) = (tmp / "cache" / "generator").glob("*/generator.ckpt")
    (data_root,) = (debug_run.data / "synthetic").iterdir()
    return Pipeline(tmp, debug_run.data, debug_run.metrics, student, generator, data_root)


def evaluate(p: Pipeline, run: str, *overrides: str) -> dict:
    """``fustal.evaluate`` in process (its one-line errors: ``SystemExit(2)``)."""
    from fustal.evaluate import run as run_evaluate

    dirs = (f"paths.data_dir={p.data}", f"paths.output_dir={p.tmp / run}")
    return run_evaluate(compose_train(p.tmp, *dirs, *overrides, config="evaluate"))


def predict(*overrides: str) -> dict:
    """``fustal.predict`` in process (its one-line errors: ``SystemExit(2)``)."""
    from fustal.predict import CONFIG_NAME
    from fustal.predict import run as run_predict

    with initialize(config_path=None, version_base="1.3"):  # conf/ is not composed here
        cfg = compose(CONFIG_NAME, overrides=["trainer.enable_progress_bar=false", *overrides])
    return run_predict(cfg)


def run_evaluate_cli(
    forked: Forkserver, p: Pipeline, run: str, *overrides: str
) -> subprocess.CompletedProcess:
    return forked(
        "evaluate",
        *DEBUG,
        f"paths.data_dir={p.data}",
        f"paths.cache_dir={p.tmp / 'cache'}",
        f"hydra.run.dir={p.tmp / run}",
        *overrides,
    )


def run_predict_cli(
    forked: Forkserver, p: Pipeline, run: str, *overrides: str
) -> subprocess.CompletedProcess:
    return forked("predict", f"hydra.run.dir={p.tmp / run}", *overrides)


def assert_exit_2(capsys: pytest.CaptureFixture, call, *needles: str) -> None:
    """``call()`` ends with one ``error:`` line naming ``needles`` and exit code 2."""
    with pytest.raises(SystemExit) as exited:
        call()
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for needle in needles:
        assert needle in lines[0]


def assert_same_metrics(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0]


def student_videos(p: Pipeline) -> dict[str, dict]:
    """Test videos of the student view: ``{vid: {"duration", "fps"}}``."""
    database = json.loads((p.data_root / "annotations" / "thumos14.json").read_text())["database"]
    return {vid: e for vid, e in database.items() if e["subset"] == "test"}


def checkpoint_hparams(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["hyper_parameters"]


def assert_same_detections(got: list[dict], want: list[dict]) -> None:
    """Equal detections up to float rounding (compared per class, sorted)."""
    assert Counter(e["label"] for e in got) == Counter(e["label"] for e in want)
    for label in {e["label"] for e in want}:
        rows = [
            np.sort([[e["score"], *e["segment"]] for e in dets if e["label"] == label], axis=0)
            for dets in (got, want)
        ]
        np.testing.assert_allclose(rows[0], rows[1], atol=1e-5)


def check_results(path: Path, classes: list[str], durations: dict[str, float]) -> dict:
    """A valid results file over exactly ``durations``' videos, segments in [0, duration]."""
    results = json.loads(path.read_text())["results"]
    assert set(results) == set(durations)
    for vid, entries in results.items():
        for entry in entries:
            assert set(entry) == {"label", "score", "segment"}
            assert entry["label"] in classes and np.isfinite(entry["score"])
            start, end = entry["segment"]
            assert 0.0 <= start < end <= durations[vid] + 1e-6, (vid, entry)
    return results


def test_evaluate_student_reproduces_pipeline(pipeline: Pipeline, forked: Forkserver) -> None:
    proc = run_evaluate_cli(
        forked, pipeline, "eval_student", f"ckpt_path={pipeline.student}", "+experiment=synthetic"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((pipeline.tmp / "eval_student" / "metrics.json").read_text())
    assert set(metrics) == {"student", "student_ema"}
    for section in ("student", "student_ema"):
        assert_same_metrics(metrics[section]["test"], pipeline.metrics[section]["test"])
        detections = pipeline.tmp / "eval_student" / f"{section}_test.json"
        assert json.loads(detections.read_text())["results"]
    assert "student + EMA" in proc.stdout


def test_evaluate_generator_reproduces_pipeline(pipeline: Pipeline) -> None:
    metrics = evaluate(pipeline, "eval_gen", f"ckpt_path={pipeline.generator}")
    assert list(metrics) == ["generator"]
    assert_same_metrics(metrics["generator"]["test"], pipeline.metrics["generator"]["test"])
    detections = json.loads((pipeline.tmp / "eval_gen" / "generator_test.json").read_text())
    assert set(detections["results"]) == set(student_videos(pipeline))


def test_predict_student_on_new_features(
    pipeline: Pipeline, tmp_path: Path, forked: Forkserver
) -> None:
    hparams = checkpoint_hparams(pipeline.student)
    timing, classes = hparams["feature_timing"], list(hparams["classes"])
    assert classes == ["Class00", "Class01", "Class02"]
    assert timing["layout"] == "overlap" and timing["stride_frames"] == 4
    fps = timing["fps"]  # predict's default: the most common fps of the dataset's videos
    database = json.loads((pipeline.data_root / "annotations" / "thumos14.json").read_text())
    counts = Counter(e["fps"] for e in database["database"].values())
    assert fps == counts.most_common(1)[0][0] and timing["fps_varies"] == (len(counts) > 1)
    same_fps = [vid for vid, e in student_videos(pipeline).items() if e["fps"] == fps][:3]
    assert len(same_fps) >= 2
    features = tmp_path / "features"
    features.mkdir()
    durations = {}
    for vid in same_fps:
        feats = np.load(pipeline.data_root / "i3d_features" / f"{vid}.npy")
        np.save(features / f"{vid}.npy", feats)
        durations[vid] = student_videos(pipeline)[vid]["duration"]
    # a video longer than the student's max_seq_len runs whole
    long = np.concatenate([np.load(features / f"{vid}.npy") for vid in same_fps] * 2)
    assert long.shape[0] > MAX_SEQ_LEN
    np.save(features / "long video.npy", long)
    durations["long video"] = ((long.shape[0] - 1) * 4 + 16) / fps

    # annotated durations for the copies; the long video is clipped to its last window's end
    durations_file = tmp_path / "durations.json"
    durations_file.write_text(json.dumps({vid: durations[vid] for vid in same_fps}))

    out = tmp_path / "out" / "detections.json"
    proc = run_predict_cli(
        forked,
        pipeline,
        "predict",
        f"ckpt_path={pipeline.student}",
        f"features={features}",
        f"out={out}",
        f"durations={durations_file}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = check_results(out, classes, durations)
    assert results["long video"] and all(results[vid] for vid in same_fps)
    late = max(e["segment"][1] for e in results["long video"])
    assert late > MAX_SEQ_LEN * 4 / fps  # detections past the first max_seq_len steps
    assert "written to" in proc.stdout and not list(out.parent.glob(".*"))
    # the pipeline's EMA test detections of the same videos (batched there: float rounding)
    cache = json.loads((pipeline.student.parent / "student_ema_test.json").read_text())
    for vid in same_fps:
        assert_same_detections(results[vid], cache["results"][vid])


def test_predict_generator_on_new_features(pipeline: Pipeline, tmp_path: Path) -> None:
    classes = list(checkpoint_hparams(pipeline.generator)["classes"])
    features = tmp_path / "features"
    features.mkdir()
    durations = {}
    for vid in list(student_videos(pipeline))[:2]:
        streams = [
            np.load(pipeline.data_root / "features" / "test" / s / f"{vid}.npy")
            for s in ("rgb", "flow")
        ]
        feats = np.concatenate(streams, axis=1)
        np.save(features / f"{vid}.npy", feats)
        durations[vid] = feats.shape[0] * 16 / 25.0
    out = tmp_path / "generator.json"
    predict(f"ckpt_path={pipeline.generator}", f"features={features}", f"out={out}")
    results = check_results(out, classes, durations)
    assert all(results.values())


def test_help(forked: Forkserver) -> None:
    """``--help`` of each entry point."""
    for module, needles in (
        ("train", ["python -m fustal.train", "Stages (stage=)", "experiment:", "debug=default"]),
        ("evaluate", ["fustal.evaluate", "ckpt_path", "experiment:", "student:"]),
        ("predict", ["fustal.predict", "ckpt_path", "features", "stride_frames"]),
    ):
        proc = forked(module, "--help")
        assert proc.returncode == 0, proc.stderr[-3000:]
        for needle in needles:
            assert needle in proc.stdout, (module, needle)


# ``python -m MODULE ARGS`` in a new interpreter, then whether it imported torch
RUN_THEN_LIST_TORCH = """
import runpy, sys
sys.argv = [{module!r}, *{args!r}]
try:
    runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
except SystemExit as stop:
    print("exit", stop.code)
print("torch imported:", "torch" in sys.modules)
"""


@pytest.mark.parametrize(
    ("module", "args", "exit_code"),
    [("fustal.train", ["+nonsense_key=1"], 2), ("fustal.score", ["--help"], 0)],
)
def test_config_mistakes_and_the_scorer_need_no_torch(
    tmp_path: Path, module: str, args: list[str], exit_code: int
) -> None:
    """A mistake in the config is reported before torch and Lightning are imported (which takes
    several seconds), and ``fustal.score`` is numpy-only."""
    args = [*args, f"hydra.run.dir={tmp_path / 'run'}"] if module == "fustal.train" else args
    code = RUN_THEN_LIST_TORCH.format(module=module, args=args)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=user_env(), timeout=120
    )
    assert f"exit {exit_code}" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert "torch imported: False" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    if exit_code:
        assert "nonsense_key: unknown key" in proc.stderr


def write_text_ckpt(tmp: Path) -> Path:
    path = tmp / "notes.ckpt"
    path.write_text("not a checkpoint\n")
    return path


def write_foreign_ckpt(tmp: Path) -> Path:
    path = tmp / "other.ckpt"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2, 2)}, "hyper_parameters": {}}, path)
    return path


BAD_CKPTS = {
    "missing": lambda tmp: tmp / "nope" / "student.ckpt",
    "text file": write_text_ckpt,
    "other model": write_foreign_ckpt,
}


@pytest.mark.parametrize("case", list(BAD_CKPTS))
def test_bad_checkpoint(
    pipeline: Pipeline, tmp_path: Path, case: str, capsys: pytest.CaptureFixture
) -> None:
    ckpt = BAD_CKPTS[case](tmp_path)
    run = f"bad_ckpt_{case.replace(' ', '_')}"
    assert_exit_2(capsys, lambda: evaluate(pipeline, run, f"ckpt_path={ckpt}"), str(ckpt))
    assert not list((pipeline.tmp / run).glob("*.json"))
    out = tmp_path / "detections.json"
    features = pipeline.data_root / "i3d_features"
    overrides = (f"ckpt_path={ckpt}", f"features={features}", f"out={out}")
    assert_exit_2(capsys, lambda: predict(*overrides), str(ckpt))
    assert not out.exists()


def test_bad_checkpoint_on_the_command_line_is_one_line(
    pipeline: Pipeline, tmp_path: Path, forked: Forkserver
) -> None:
    ckpt = write_text_ckpt(tmp_path)
    proc = run_evaluate_cli(forked, pipeline, "bad_cli", f"ckpt_path={ckpt}")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(ckpt) in lines[0]


def test_evaluate_checkpoint_of_other_feature_dim(
    pipeline: Pipeline, capsys: pytest.CaptureFixture
) -> None:
    overrides = (f"ckpt_path={pipeline.student}", "dataset.synthetic.feature_dim=8")
    needles = (str(pipeline.student), "16-dim", "8-dim")
    assert_exit_2(capsys, lambda: evaluate(pipeline, "eval_dim", *overrides), *needles)
    assert not list((pipeline.tmp / "eval_dim").glob("*.json"))


def test_predict_bad_features(
    pipeline: Pipeline, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "detections.json"
    empty = tmp_path / "empty"
    empty.mkdir()
    wrong_dim = tmp_path / "wrong_dim"
    wrong_dim.mkdir()
    np.save(wrong_dim / "video.npy", np.zeros((50, 7), dtype=np.float32))
    for features, needle in (
        (tmp_path / "missing", str(tmp_path / "missing")),
        (empty, str(empty)),
        (wrong_dim, str(wrong_dim / "video.npy")),
    ):
        overrides = (f"ckpt_path={pipeline.student}", f"features={features}", f"out={out}")
        assert_exit_2(capsys, lambda o=overrides: predict(*o), needle)
        assert not out.exists() and not list(tmp_path.glob(".detections*"))
