"""Kill-and-resume and determinism of ``python -m fustal.train`` on the CPU, at the debug scale.

A run is SIGKILLed at a chosen point (the test's own Lightning callback,
:class:`tests.faults.KillAt`, added on the command line; or by timing), started again with the
same command, and must end with outputs byte-identical to those of an uninterrupted run. The
second uninterrupted run starts a new interpreter (its own hash seed); every other run is a
process forked from the test process's server (:func:`tests.conftest.forked`), each a process of
its own that is killed and started again.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import DEBUG, Forkserver, run_fustal

# generator: 3 steps per epoch, 30 steps, a test mAP and a resume checkpoint every 10 steps
# (steps 10 and 20 fall inside an epoch); student: 3 steps per epoch, 3 pseudo-label epochs
# (steps 1-9) and 2 of distillation (steps 10-15), a checkpoint at every epoch end
SIZES = [
    *DEBUG,
    "generator.val_every=10",
    "student.epochs_pseudo=3",
    "student.epochs_distill=2",
    "plot_videos=0",
]
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


def train_process(root: Path, data_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    """``python -m fustal.train`` of this module's runs in a new interpreter (the subject: a
    process killed and started again)."""
    return run_fustal("train", *train_args(root, data_dir), *extra)


def killed(
    forked: Forkserver, root: Path, data_dir: Path, stage: str, point: str, *extra: str
) -> None:
    """A forked run of this module's command, SIGKILLed by :class:`tests.faults.KillAt`."""
    fault = f"+callbacks.fault={{_target_:tests.faults.KillAt,stage:{stage},point:{point}}}"
    proc = forked("train", *train_args(root, data_dir), *extra, fault)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]


def assert_same_outputs(expected: Path, actual: Path) -> None:
    for name in OUTPUTS:
        want, got = (expected / name).read_bytes(), (actual / name).read_bytes()
        assert json.loads(got) == json.loads(want), name
        assert got == want, name


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic dataset for every run (its path is part of the stage keys)."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def reference_root(
    tmp_path_factory: pytest.TempPathFactory, data_dir: Path, forked: Forkserver
) -> Path:
    """Root (``run`` and ``cache``) of an uninterrupted run."""
    root = tmp_path_factory.mktemp("reference")
    proc = forked("train", *train_args(root, data_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def reference(reference_root: Path) -> Path:
    """Run dir of an uninterrupted run."""
    return reference_root / "run"


def seed_generator(root: Path, reference_root: Path) -> None:
    """Start ``root``'s cache with the reference run's finished generator entry (a student-stage
    kill then costs no generator training; its key is the same: same data, code and config)."""
    shutil.copytree(reference_root / "cache" / "generator", root / "cache" / "generator")


def test_same_command_gives_byte_identical_outputs(
    tmp_path: Path, data_dir: Path, reference: Path
) -> None:
    """A new interpreter ends with the bytes of the forked reference run."""
    proc = train_process(tmp_path, data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "reusing" not in proc.stdout and "resuming" not in proc.stdout
    assert_same_outputs(reference, tmp_path / "run")


@pytest.mark.parametrize(
    ("stage", "point", "seeded"),
    [
        ("generator", "step14", False),  # mid-epoch, after the mid-epoch step-10 checkpoint
        ("generator", "fitted", False),  # trained, before pseudo-label inference
        # generator finished by the killed run itself, nothing of the student saved yet
        ("student", "step1", False),
        ("student", "step5", True),  # pseudo-label phase, mid-epoch
        ("student", "step14", True),  # distillation phase: EMA teacher restored
    ],
)
def test_killed_run_resumes_to_identical_outputs(
    stage: str,
    point: str,
    seeded: bool,
    tmp_path: Path,
    data_dir: Path,
    reference_root: Path,
    reference: Path,
    forked: Forkserver,
) -> None:
    if seeded:
        seed_generator(tmp_path, reference_root)
    killed(forked, tmp_path, data_dir, stage, point)
    resumed = forked("train", *train_args(tmp_path, data_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    if point != "step1":
        assert f"{stage}: resuming from" in resumed.stdout
    if stage == "student":
        assert "generator: reusing" in resumed.stdout
    assert_same_outputs(reference, tmp_path / "run")


def test_unfinished_stage_dir_is_never_read(
    tmp_path: Path, data_dir: Path, reference_root: Path, reference: Path, forked: Forkserver
) -> None:
    """An entry without its manifest is recomputed, not read: the student killed after training
    with a truncated artifact and temp files left of killed writes; the generator entry of the
    same cache with its manifest removed and an artifact truncated."""
    seed_generator(tmp_path, reference_root)
    killed(forked, tmp_path, data_dir, "student", "fitted")
    (gen,) = (tmp_path / "cache" / "generator").iterdir()
    (student,) = (tmp_path / "cache" / "student").iterdir()
    assert not (student / "manifest.json").exists()
    (gen / "manifest.json").unlink()
    for entry, artifact in ((gen, "pseudo_labels.json"), (student, "student_test.json")):
        text = reference.joinpath(artifact).read_text()
        (entry / artifact).write_text(text[: len(text) // 2])
        (entry / f".{artifact}.x8k2.tmp").write_text(text[:100])
    resumed = forked("train", *train_args(tmp_path, data_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "reusing" not in resumed.stdout
    assert "student: resuming from" in resumed.stdout
    assert (gen / "manifest.json").is_file() and (student / "manifest.json").is_file()
    assert_same_outputs(reference, tmp_path / "run")


def test_sigkill_by_timing_during_student_training(
    tmp_path: Path, data_dir: Path, reference_root: Path, reference: Path, forked: Forkserver
) -> None:
    """No callback: kill the run as soon as the student's first checkpoint appears."""
    seed_generator(tmp_path, reference_root)
    run = forked.start("train", *train_args(tmp_path, data_dir))
    students = tmp_path / "cache" / "student"
    deadline = time.monotonic() + 300
    while run.process.is_alive() and time.monotonic() < deadline:
        if any(students.glob("*/checkpoints/last.ckpt")):
            break
        time.sleep(0.01)
    run.process.kill()
    killed = run.finish()
    assert killed.returncode == -signal.SIGKILL, (
        "the run ended before its student checkpoint showed"
    )
    assert not any(students.glob("*/manifest.json"))

    resumed = forked("train", *train_args(tmp_path, data_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "student: resuming from" in resumed.stdout
    assert_same_outputs(reference, tmp_path / "run")


def test_a_run_choosing_on_held_out_videos_resumes_to_the_same_choice(
    tmp_path: Path, data_dir: Path, forked: Forkserver
) -> None:
    """validation=heldout, with scripted held-out curves: the generator killed at step 24, after
    its best evaluation (step 20), then the student killed during distillation; the restarts end
    with the outputs of an uninterrupted run, its choice included."""
    curves = (
        "+callbacks.curve={_target_:tests.probes.ScriptedCurve,every:10,curves:{"
        "generator:[0.1,0.9,0.2],student:[0.1,0.2,0.9,0.3,0.4],student_ema:[0,0,0,0.6,0.5]}}"
    )
    held = ("validation=heldout", "validation.fraction=0.25", "student.val_every=1", curves)
    whole = forked("train", *train_args(tmp_path / "whole", data_dir), *held)
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert "generator: selected step 20 of 30" in whole.stdout
    root = tmp_path / "killed"
    killed(forked, root, data_dir, "generator", "step24", *held)
    killed(forked, root, data_dir, "student", "step14", *held)
    resumed = forked("train", *train_args(root, data_dir), *held)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "student: resuming from" in resumed.stdout
    assert_same_outputs(tmp_path / "whole" / "run", root / "run")
    selected = json.loads((root / "run" / "metrics.json").read_text())
    chosen = {model: selected[model]["selected"] for model in ("student", "student_ema")}
    assert (chosen["student"]["epoch"], chosen["student_ema"]["epoch"]) == (3, 4)
