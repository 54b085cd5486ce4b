"""End-to-end runs of ``python -m fustal.train`` as a user runs it (subprocess, real Hydra,
real files), at tiny sizes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_fustal

TINY = [
    "dataset.synthetic.num_classes=3",
    "dataset.synthetic.train_videos=12",
    "dataset.synthetic.test_videos=6",
    "dataset.synthetic.min_duration=20",
    "dataset.synthetic.max_duration=40",
    "dataset.synthetic.feature_dim=16",
    "generator.hidden_dim=32",
    "generator.max_steps=30",
    "generator.val_every=15",
    "generator.batch_size=4",
    "generator.num_segments=64",
    "student.model.embd_dim=16",
    "student.model.fpn_dim=16",
    "student.model.head_dim=16",
    "student.model.sgp_mlp_dim=32",
    "student.model.max_seq_len=320",
    "student.epochs_pseudo=2",
    "student.epochs_distill=1",
    "student.full_epochs=2",
    "student.batch_size=4",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "logger=none",
]
MAP_KEYS = [f"mAP@{t}" for t in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)] + ["avg"]


def run_train(tmp: Path, run: str, *overrides: str) -> subprocess.CompletedProcess:
    """``python -m fustal.train`` at the TINY sizes, data, cache and run dir under ``tmp``."""
    return run_fustal(
        "train",
        *TINY,
        f"paths.data_dir={tmp / 'data'}",
        f"paths.cache_dir={tmp / 'cache'}",
        f"hydra.run.dir={tmp / run}",
        *overrides,
    )


def check_map(section: dict) -> None:
    assert list(section) == MAP_KEYS
    assert all(0.0 <= v <= 1.0 for v in section.values())


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pipeline")


def test_stage_generator_writes_pseudo_labels_and_metrics(tmp: Path) -> None:
    proc = run_train(tmp, "gen", "stage=generator")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp / "gen"
    pseudo = json.loads((run / "pseudo_labels.json").read_text())["results"]
    train_ids = Path(next((tmp / "data" / "synthetic").iterdir())) / "split_train.txt"
    assert set(pseudo) == set(train_ids.read_text().split())
    entry = next(e for entries in pseudo.values() for e in entries)
    assert set(entry) == {"label", "score", "segment"} and entry["segment"][0] < entry["segment"][1]
    assert json.loads((run / "generator_test.json").read_text())["results"]
    metrics = json.loads((run / "metrics.json").read_text())
    check_map(metrics["generator"]["test"])
    raw = metrics["pseudo_labels"]["raw"]
    assert raw["count"] == sum(len(v) for v in pseudo.values())
    assert 0.0 <= raw["precision@0.5"] <= 1.0 and 0.0 <= raw["recall@0.5"] <= 1.0
    assert "student" not in metrics
    assert not list(run.glob("**/*.tmp"))


def test_stage_all_then_filter_sweep_reuses_generator(tmp: Path) -> None:
    first = run_train(tmp, "all", "stage=all")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "generator: reusing" in first.stdout  # trained by the previous test, same config
    metrics = json.loads((tmp / "all" / "metrics.json").read_text())
    for section in ("student", "student_ema"):
        check_map(metrics[section]["test"])
    filtered = json.loads((tmp / "all" / "pseudo_labels.filtered.json").read_text())["results"]
    assert metrics["pseudo_labels"]["filtered"]["count"] == sum(len(v) for v in filtered.values())
    assert metrics["pseudo_labels"]["filtered"]["count"] <= metrics["pseudo_labels"]["raw"]["count"]
    assert "fustal results" in first.stdout and "student + EMA" in first.stdout

    second = run_train(tmp, "score", "stage=all", "filter=score")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "generator: reusing" in second.stdout
    assert "student: reusing" not in second.stdout
    generators = list((tmp / "cache" / "generator").iterdir())
    assert len(generators) == 1
    assert len(list((tmp / "cache" / "student").iterdir())) == 2


def test_full_supervision_and_corrupt_cache_is_recomputed(tmp: Path) -> None:
    proc = run_train(tmp, "full", "supervision=full", "ema=none")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp / "full" / "metrics.json").read_text())
    check_map(metrics["student"]["test"])
    assert "generator" not in metrics and "upper bound" in proc.stdout

    entry = next((tmp / "cache" / "generator").iterdir())
    pseudo = entry / "pseudo_labels.json"
    pseudo.write_text(pseudo.read_text()[:100])
    again = run_train(tmp, "regen", "stage=generator")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "generator: reusing" not in again.stdout
    assert json.loads(pseudo.read_text())["results"]


def test_bad_pseudo_label_file_is_a_one_line_error(tmp: Path) -> None:
    bad = tmp / "bad_pseudo.json"
    bad.write_text(json.dumps({"results": {"no_such_video": []}}))
    proc = run_train(tmp, "bad", "stage=student", f"pseudo_labels={bad}")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error:") and "no_such_video" in lines[-1]
    assert "Traceback" not in proc.stderr
