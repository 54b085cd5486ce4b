"""Kill-and-resume and determinism of ``python -m fustal.train`` on the CPU, at tiny sizes.

A run is SIGKILLed at a chosen point (the fault-injection hook ``FUSTAL_FAULT_AT``, see
:func:`fustal.pipeline.context.fault_point`, or by timing), started again with the same command,
and must end with outputs byte-identical to those of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fustal.pipeline.context import FAULT_ENV
from tests.conftest import run_fustal
from tests.test_pipeline import TINY

# generator: 3 steps per epoch, last.ckpt every 5 epochs (steps 15 and 30), test mAP at step 15;
# student: 3 steps per epoch, 3 pseudo-label epochs (steps 1-9), 2 distillation epochs (10-15)
SIZES = [*TINY, "student.epochs_pseudo=3", "student.epochs_distill=2", "plot_videos=0"]
OUTPUTS = [
    "metrics.json",
    "pseudo_labels.json",
    "pseudo_labels.filtered.json",
    "generator_test.json",
    "student_test.json",
    "student_ema_test.json",
]


def train_args(root: Path, data_dir: Path) -> list[str]:
    """The command line of every run here: one data dir, cache and run dir under ``root``."""
    return [
        *SIZES,
        f"paths.data_dir={data_dir}",
        f"paths.cache_dir={root / 'cache'}",
        f"hydra.run.dir={root / 'run'}",
    ]


def train(root: Path, data_dir: Path) -> subprocess.CompletedProcess:
    return run_fustal("train", *train_args(root, data_dir))


def killed_then_resumed(
    root: Path, data_dir: Path, fault: str, monkeypatch: pytest.MonkeyPatch
) -> subprocess.CompletedProcess:
    """Run with ``FUSTAL_FAULT_AT=fault`` (it must die of SIGKILL), then without."""
    monkeypatch.setenv(FAULT_ENV, fault)
    killed = train(root, data_dir)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    monkeypatch.delenv(FAULT_ENV)
    resumed = train(root, data_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return resumed


def assert_same_outputs(expected: Path, actual: Path) -> None:
    for name in OUTPUTS:
        want, got = (expected / name).read_bytes(), (actual / name).read_bytes()
        assert json.loads(got) == json.loads(want), name
        assert got == want, name


@pytest.fixture(autouse=True)
def no_fault(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Runs are not killed unless a test asks for it."""
    monkeypatch.delenv(FAULT_ENV, raising=False)
    yield


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic dataset for every run (its path is part of the stage keys)."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """Run dir of an uninterrupted run."""
    root = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(FAULT_ENV, raising=False)
        proc = train(root, data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "run"


def test_same_command_gives_byte_identical_outputs(
    tmp_path: Path, data_dir: Path, reference: Path
) -> None:
    proc = train(tmp_path, data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "reusing" not in proc.stdout and "resuming" not in proc.stdout
    assert_same_outputs(reference, tmp_path / "run")


@pytest.mark.parametrize(
    ("fault", "resumes"),
    [
        ("generator:step20", "generator"),  # mid-epoch, after the step-15 checkpoint and test mAP
        ("generator:fitted", "generator"),  # before pseudo-label inference
        ("filter:written", None),
        ("student:step5", "student"),  # pseudo-label phase, mid-epoch
        ("student:step14", "student"),  # distillation phase: EMA teacher restored
    ],
)
def test_killed_run_resumes_to_identical_outputs(
    fault: str,
    resumes: str | None,
    tmp_path: Path,
    data_dir: Path,
    reference: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resumed = killed_then_resumed(tmp_path, data_dir, fault, monkeypatch)
    if resumes is not None:
        assert f"{resumes}: resuming from" in resumed.stdout
    if fault.startswith(("filter", "student")):
        assert "generator: reusing" in resumed.stdout
    assert_same_outputs(reference, tmp_path / "run")


@pytest.mark.parametrize(
    ("stage", "artifact"), [("generator", "pseudo_labels.json"), ("student", "student_test.json")]
)
def test_unfinished_stage_dir_is_never_read(
    stage: str,
    artifact: str,
    tmp_path: Path,
    data_dir: Path,
    reference: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Killed after writing its artifacts but before its manifest, a stage is recomputed: a
    truncated artifact and a temp file left by a killed write are not read."""
    monkeypatch.setenv(FAULT_ENV, f"{stage}:written")
    killed = train(tmp_path, data_dir)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (entry,) = (tmp_path / "cache" / stage).iterdir()
    assert not (entry / "manifest.json").exists()
    text = (entry / artifact).read_text()
    (entry / artifact).write_text(text[: len(text) // 2])
    (entry / f".{artifact}.x8k2.tmp").write_text(text[:100])
    (entry / "checkpoints" / ".last.ckpt.tmp").write_bytes(b"PK\x03\x04 half a checkpoint")

    monkeypatch.delenv(FAULT_ENV)
    resumed = train(tmp_path, data_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{stage}: reusing" not in resumed.stdout
    assert f"{stage}: resuming from" in resumed.stdout
    assert (entry / "manifest.json").is_file()
    assert_same_outputs(reference, tmp_path / "run")


def test_sigkill_by_timing_during_student_training(
    tmp_path: Path, data_dir: Path, reference: Path
) -> None:
    """No hook: kill the run as soon as the student's first checkpoint appears."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "fustal.train", *train_args(tmp_path, data_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    students = tmp_path / "cache" / "student"
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if any(students.glob("*/checkpoints/last.ckpt")):
            break
        time.sleep(0.01)
    proc.kill()
    assert proc.wait() == -signal.SIGKILL, "the run ended before its student checkpoint showed"
    assert not any(students.glob("*/manifest.json"))

    resumed = train(tmp_path, data_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "student: resuming from" in resumed.stdout
    assert_same_outputs(reference, tmp_path / "run")
