"""The stage cache never serves stale work: code fingerprints, and a run whose stage code was
edited (a copy of the package, run as a user runs it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from fustal.pipeline.cache import code_fingerprint, source_files
from tests.conftest import DEBUG, REPO_ROOT


def test_code_fingerprint_follows_the_source_of_every_listed_module(tmp_path: Path) -> None:
    package = tmp_path / "fakepkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "a.py").write_text("X = 1\n")
    (package / "b.py").write_text("Y = 2\n")
    sys.path.insert(0, str(tmp_path))
    try:
        assert [p.name for p in source_files("fakepkg.sub")] == ["__init__.py", "a.py"]
        before = code_fingerprint(["fakepkg.sub"])
        assert code_fingerprint(["fakepkg.sub", "fakepkg.b"]) != before
        (package / "sub" / "a.py").write_text("X = 1  # edited\n")
        source_files.cache_clear()
        assert code_fingerprint(["fakepkg.sub"]) != before
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith("fakepkg")]:
            del sys.modules[name]
        source_files.cache_clear()


def run_copy(src: Path, tmp: Path, run: str) -> subprocess.CompletedProcess:
    """``python -m fustal.train`` from the package copy ``src`` at the debug scale."""
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    cmd = [
        sys.executable,
        "-m",
        "fustal.train",
        *DEBUG,
        "plot_videos=0",
        f"paths.data_dir={tmp / 'data'}",
        f"paths.cache_dir={tmp / 'cache'}",
        f"hydra.run.dir={tmp / run}",
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp)


def test_editing_stage_code_recomputes_that_stage_and_what_depends_on_it(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for name in ("fustal", "conf"):
        shutil.copytree(REPO_ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    first = run_copy(src, tmp_path, "first")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "reusing" not in first.stdout

    proposals = src / "fustal" / "pseudo" / "proposals.py"
    proposals.write_text(proposals.read_text() + textwrap.dedent("\n# an edit\n"))
    second = run_copy(src, tmp_path, "second")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "generator: reusing" not in second.stdout
    assert "student: reusing" not in second.stdout  # downstream of the generator
    assert len(list((tmp_path / "cache" / "generator").iterdir())) == 2

    third = run_copy(src, tmp_path, "third")
    assert "generator: reusing" in third.stdout and "student: reusing" in third.stdout
