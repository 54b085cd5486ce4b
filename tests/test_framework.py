"""Experiment-framework behaviour as a user sees it: multirun sweeps with their summary, the
joblib launcher sharing one generator artifact, and offline W&B / TensorBoard logging."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

from tests.conftest import DEBUG, Forkserver, train


def run_sweep(forked: Forkserver, tmp: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``python -m fustal.train -m`` at the debug scale, sweep dir ``tmp/sweep`` (forked; the
    joblib launcher's workers, the subject, are new interpreters as a user's are)."""
    return forked(
        "train",
        "-m",
        *DEBUG,
        "plot_videos=0",
        f"paths.data_dir={tmp / 'data'}",
        f"paths.cache_dir={tmp / 'cache'}",
        f"hydra.sweep.dir={tmp / 'sweep'}",
        *overrides,
        timeout=900,
    )


def test_joblib_sweep_trains_the_generator_once_and_writes_the_summary(
    tmp_path: Path, forked: Forkserver
) -> None:
    """Two filter settings run as parallel joblib jobs: the stage lock makes one job train the
    generator while the other waits and reuses it; the sweep ends with ``summary.csv``."""
    proc = run_sweep(
        forked,
        tmp_path,
        "+experiment=synthetic",
        "filter=fustal,none",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    sweep = tmp_path / "sweep"
    assert len(list((tmp_path / "cache" / "generator").iterdir())) == 1
    assert len(list((tmp_path / "cache" / "student").iterdir())) == 2
    jobs = [json.loads((sweep / n / "metrics.json").read_text()) for n in ("0", "1")]
    assert jobs[0]["generator"] == jobs[1]["generator"]
    assert jobs[0]["pseudo_labels"]["raw"] == jobs[1]["pseudo_labels"]["raw"]
    filtered = [job["pseudo_labels"]["filtered"]["count"] for job in jobs]
    assert filtered[0] < filtered[1] == jobs[1]["pseudo_labels"]["raw"]["count"]

    with (sweep / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    # the overrides shared by both jobs are left out of the setting names
    by_setting = {row["setting"]: row for row in rows}
    assert sorted(by_setting) == ["filter=fustal", "filter=none"]
    fustal_row = by_setting["filter=fustal"]
    assert fustal_row["runs"] == "1"
    assert fustal_row["student_ema.test.avg.std"] == "n/a"  # one seed: no spread
    assert float(fustal_row["student_ema.test.avg.mean"]) == jobs[0]["student_ema"]["test"]["avg"]

    again = forked("summarize", str(sweep))
    assert again.returncode == 0, again.stderr
    assert "filter=none" in again.stdout
    assert "avg 0.1:0.7 mAP %" in again.stdout and "± n/a" in again.stdout


def test_offline_wandb_and_tensorboard_receive_losses_metrics_tables_and_pictures(
    tmp_path: Path,
) -> None:
    train(
        tmp_path,
        "logger=[csv,tensorboard,wandb]",
        "trainer.log_every_n_steps=1",
        "plot_videos=1",
        "student.val_every=1",
        "validation=heldout",
    )
    run = tmp_path / "run"
    wandb_runs = list((run / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 1, wandb_runs  # one W&B run for all stages of a fustal run
    # the run file is a record log of protobufs; metric and media keys appear verbatim
    data = next(wandb_runs[0].glob("run-*.wandb")).read_bytes()
    for key in (
        "generator/train/loss",
        "generator/test/mAP@0.5",
        "student/train/loss",
        "student/test/avg",
        "student_ema/test/avg",
        "student_ema/val/avg",
        "generator/val/video_map",
        "pseudo_labels/filtered/precision@0.5",
        "tables/test_map",
        "tables/val_map",
        "tables/pseudo_label_quality",
        "lr-AdamW",
    ):
        assert key.encode() in data, key
    assert list((wandb_runs[0] / "files" / "media" / "images" / "pictures").glob("*.png"))

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    summary = EventAccumulator(str(run / "tensorboard" / "summary"))
    summary.Reload()
    assert {"student_ema/test/avg", "student_ema/val/avg"} <= set(summary.Tags()["scalars"])
    texts = {t.split("/text_summary")[0] for t in summary.Tags()["tensors"]}
    assert {"tables/test_map", "tables/val_map", "tables/pseudo_label_quality"} <= texts
    generator = EventAccumulator(str(run / "tensorboard" / "generator"))
    generator.Reload()
    scalars = set(generator.Tags()["scalars"])
    # during training the held-out videos are evaluated, never the test videos
    assert {"generator/train/loss", "generator/val/mAP@0.5", "lr-Adam"} <= scalars
    assert not [tag for tag in scalars if "/test/" in tag]
    assert (run / "csv" / "student" / "metrics.csv").is_file()


def test_relative_paths_mean_the_same_with_hydra_job_chdir(
    tmp_path: Path, forked: Forkserver
) -> None:
    """Relative paths are taken from the folder the command is started in, also when Hydra
    changes into the run dir (``hydra.job.chdir=true``)."""
    proc = forked(
        "train",
        *DEBUG,
        "stage=generator",
        "plot_videos=0",
        "hydra.job.chdir=true",
        "paths.data_dir=my_data",
        "paths.cache_dir=my_cache",
        "hydra.run.dir=my_run",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list((tmp_path / "my_data" / "synthetic").iterdir())
    assert list((tmp_path / "my_cache" / "generator").iterdir())
    assert (tmp_path / "my_run" / "pseudo_labels.json").is_file()
    assert not (tmp_path / "my_run" / "my_data").exists()
    assert not (tmp_path / "my_run" / "my_cache").exists()
