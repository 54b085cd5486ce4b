"""What a researcher sees: the log of a run read top to bottom (header, stage banners, progress
lines, results table, ``train.log``, ``config.yaml``), a table that fits 80 columns, the
documented ``metrics.json`` keys, warnings for runs that cannot log curves, and SIGTERM/SIGINT
stopping a run within seconds with its resume checkpoint intact."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from rich.console import Console

from fustal.metrics.shape import flatten
from fustal.metrics.table import results_table
from tests.conftest import DEBUG, Forkserver, train

REPO_ROOT = Path(__file__).resolve().parents[1]
THUMOS_TIOU = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
ANET_TIOU = [round(0.5 + 0.05 * i, 2) for i in range(10)]
# what Lightning and the libraries print unless fustal quiets them or fixes their cause
NOISE = (
    "weights_only",
    "litlogger",
    "val_dataloader",
    "DeprecationWarning",
    "FutureWarning",
    "Epoch 0/-",
    "v_num",
    "Traceback",
)


def documented_metrics() -> dict:
    """The ``metrics.json`` example of the README (the JSON block after its marker)."""
    text = (REPO_ROOT / "README.md").read_text()
    marker = text.index("<!-- metrics.json -->")
    block = re.search(r"```json\n(.*?)```", text[marker:], re.S)
    assert block, "README: no ```json block after <!-- metrics.json -->"
    return json.loads(block.group(1))


def key_tree(node: object) -> object:
    return {k: key_tree(v) for k, v in node.items()} if isinstance(node, dict) else None


def render(table: object, width: int = 80) -> list[str]:
    buffer = io.StringIO()
    Console(file=buffer, width=width).print(table)
    return buffer.getvalue().splitlines()


@pytest.mark.parametrize(
    ("tiou", "columns"),
    [
        (THUMOS_TIOU, ["@0.3", "@0.5", "@0.7", "avg 0.1:0.7"]),
        (ANET_TIOU, ["@0.5", "@0.75", "@0.95", "avg 0.5:0.95"]),
    ],
)
def test_results_table_follows_the_thresholds_and_fits_80_columns(
    tiou: list[float], columns: list[str]
) -> None:
    metrics = documented_metrics()
    for node in (metrics["generator"]["test"], metrics["student"]["test"]):
        node.update({f"mAP@{t:g}": 0.5 for t in tiou})
    lines = render(results_table(flatten(metrics), tiou))
    assert max(map(len, lines)) <= 80
    header = next(line for line in lines if "@" in line)
    assert header.split() == [*" ".join(columns).split(), "count", "prec@.5", "rec@.5"]
    for label in ("generator", "pseudo, raw", "pseudo, filtered", "student", "student + EMA"):
        (row,) = [line for line in lines if re.match(rf"\s*{re.escape(label)}\s+[\d-]", line)]
        assert len(row.split()) == len(label.split()) + 7, row  # no wrapped label or value


def test_train_log_reads_top_to_bottom(tmp_path: Path, forked: Forkserver) -> None:
    """A debug ``make demo`` with its output to a file (as in SLURM): the header, one banner per
    stage in order, plain progress lines, the results table last; nothing of the noise the
    libraries print by default; ``train.log`` holds the same messages and table; the run dir
    holds the full config; the README's ``metrics.json`` keys are the real ones."""
    run = tmp_path / "run"
    proc = forked(
        "train",
        *DEBUG,
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={run}",
        "trainer.enable_progress_bar=true",
        "callbacks.progress_bar.interval_s=0",
        "plot_videos=1",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert out.startswith("fustal: stage=all on synthetic (12 training / 6 test videos"), out[:300]
    expected = [
        "scale=tiny sets 21 size values over the group files (conf/scale/tiny.yaml; listed in",
        "stage 1/3 generator: training 30 steps",
        "generator: step 30/30",
        "generator: pseudo-labelling the training videos",
        "generator: predicting videos",
        "stage 2/3 filter: ",
        "pseudo labels kept (density >= 0.2, score > 0.4)",
        "stage 3/3 student: 2 epochs on pseudo labels, then 1 of EMA distillation",
        "student: step",
        "student: detecting on the test videos",
        "pictures: ",
        "fustal results (mAP %)",
    ]
    positions = [out.find(needle) for needle in expected]
    assert min(positions) >= 0, [n for n, p in zip(expected, positions, strict=True) if p < 0]
    assert positions == sorted(positions), out
    assert "\r" not in out  # plain lines, no redraws
    # a test mAP measured at an earlier step says so (the debug generator tests every 15 steps)
    assert re.search(
        r"generator: step 1[6-9]/30 · loss \S+ · generator test avg \S+ \(at step 15\)", out
    )
    assert re.search(r"generator: step 15/30 · loss \S+ · generator test avg [\d.]+\n", out)
    assert "student + EMA" in out.splitlines()[-3]  # the table ends the output
    for noise in NOISE:
        assert noise not in out + proc.stderr, noise
    assert "_target_" not in out  # no config tree

    log = (run / "train.log").read_text()
    assert "scale=tiny sets: generator.max_steps=30, " in log  # as this (debug) run uses them
    for needle in ("stage 1/3 generator", "stage 3/3 student", "fustal results", "student + EMA"):
        assert needle in log, needle
    config = OmegaConf.load(run / "config.yaml")
    assert config.generator.max_steps == 30 and config.stage == "all"

    metrics = json.loads((run / "metrics.json").read_text())
    assert key_tree(metrics) == key_tree(documented_metrics())


def test_logging_a_run_whose_stages_are_all_cached_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    train(tmp_path, "stage=generator")
    assert "reused from the cache" not in caplog.text
    train(tmp_path, "stage=generator", "logger=tensorboard")
    assert "logger=tensorboard: every stage of this run was reused from the cache" in caplog.text


def stopped_run(
    tmp_path: Path, sig: signal.Signals, forked: Forkserver
) -> tuple[int, float, str, Path]:
    """Start a long generator run, send ``sig`` once its first resume checkpoint exists;
    return the exit code, the seconds it took to stop, stderr and the checkpoint. The run is a
    process of its own, forked with Python's default handlers (SIGINT raises
    KeyboardInterrupt, as in a shell's foreground job)."""
    run = forked.start(
        "train",
        *DEBUG,
        "stage=generator",
        "generator.max_steps=100000",
        "generator.val_every=5",
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    deadline = time.monotonic() + 300
    checkpoints: list[Path] = []
    while not checkpoints and run.process.is_alive() and time.monotonic() < deadline:
        time.sleep(0.5)
        checkpoints = list((tmp_path / "cache").glob("generator/*/checkpoints/last.ckpt"))
    assert checkpoints and run.process.is_alive(), "the run ended or never wrote a checkpoint"
    time.sleep(1.0)  # well into training
    sent = time.monotonic()
    os.kill(run.process.pid, sig)
    proc = run.finish(timeout=60)
    assert proc.returncode is not None and proc.returncode >= 0, (
        f"{sig.name} did not stop the run within 60 s"
    )
    return proc.returncode, time.monotonic() - sent, proc.stderr, checkpoints[0]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_training_within_seconds_leaving_its_checkpoint(
    tmp_path: Path, sig: signal.Signals, forked: Forkserver
) -> None:
    code, seconds, err, checkpoint = stopped_run(tmp_path, sig, forked)
    assert code == 130, err[-3000:]
    assert seconds < 15
    lines = err.strip().splitlines()
    assert lines[-1].startswith("interrupted: generator training stopped"), err[-3000:]
    assert "the same command resumes" in lines[-1]
    assert "Traceback" not in err
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert state["global_step"] >= 5 and "loops" in state
    assert not list(tmp_path.glob("**/*.tmp"))
