"""DDP on the CPU (``trainer=ddp_cpu``: 2 processes, gloo) against a single process on the same
seed, as a user runs it (the command, real Hydra, real files; the DDP worker a new
interpreter), at the debug scale."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from torch.utils.data import DataLoader

from fustal.data import sampling
from fustal.data.sampling import EpochSampler, rank_batch_size
from fustal.errors import FustalError
from tests.conftest import DEBUG, Forkserver
from tests.test_pipeline import check_map

# A generator whose loss is a mean of per-video terms and that draws no random numbers: sharded
# training then equals single-process training up to float reduction order.
DECOMPOSABLE_GENERATOR = [
    "generator=cola",
    "generator.module.net.dropout=0",
    "generator.module.mining_dropout=0",
]
HEADLINE = {
    "generator": "test.avg",
    "pseudo_labels": "raw.avg",
    "student": "test.avg",
    "student_ema": "test.avg",
}
# what a DDP run dir holds beyond a single-process one: rank 1's log
WORKER_LOG = "train_rank1.log"


def fustal_train(forked: Forkserver, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m fustal.train`` at the debug scale with every path under ``tmp`` (default run
    dirs under ``tmp/logs``, working dir ``tmp/cwd``): a process writing anywhere else shows.
    Forked: the DDP worker that it starts is a new interpreter, as a user's is."""
    (tmp / "cwd").mkdir(parents=True, exist_ok=True)
    return forked(
        "train",
        *args,
        *DEBUG,
        "plot_videos=0",
        f"paths.data_dir={tmp / 'data'}",
        f"paths.cache_dir={tmp / 'cache'}",
        f"paths.log_dir={tmp / 'logs'}",
        cwd=tmp / "cwd",
    )


def headline(metrics: dict) -> dict[str, float]:
    """The avg mAP of every ``HEADLINE`` section present in ``metrics``."""
    out = {}
    for section, key in HEADLINE.items():
        node = metrics.get(section)
        if node is not None:
            for part in key.split("."):
                node = node[part]
            out[section] = node
    return out


def files(run_dir: Path) -> set[str]:
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}


def test_ddp_cpu_trains_and_infers_like_a_single_process_in_one_sweep(
    tmp_path: Path, forked: Forkserver
) -> None:
    """``-m trainer=cpu,ddp_cpu``: a single-process and a DDP job follow each other in one
    process, the DDP job's worker runs in that job's dir (one writer per file, nothing written
    elsewhere), the sweep summary is written once; the same pseudo labels up to float rounding
    (the generator's training is sharded but its loss decomposes over videos), the same test
    metrics within 0.02 (the student's loss normalizer is per rank and its dropout draws
    differ)."""
    sweep = tmp_path / "sweep"
    proc = fustal_train(
        forked,
        tmp_path,
        "-m",
        "trainer=cpu,ddp_cpu",
        *DECOMPOSABLE_GENERATOR,
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.count("fustal results") == 2 and proc.stdout.count("sweep summary") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "cwd", "data", "sweep"]
    assert not list((tmp_path / "cwd").iterdir())
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    with (sweep / "summary.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 2
    runs = {"single": sweep / "0", "ddp": sweep / "1"}
    assert WORKER_LOG not in files(runs["single"])
    assert files(runs["ddp"]) == files(runs["single"]) | {WORKER_LOG}
    assert not [f for f in files(runs["ddp"]) if f.endswith(".tmp")]
    for stage in ("generator", "student"):  # one entry per trainer config, none half-written
        entries = list((tmp_path / "cache" / stage).iterdir())
        assert len(entries) == 2 and all((e / "manifest.json").is_file() for e in entries)

    metrics = {k: json.loads((v / "metrics.json").read_text()) for k, v in runs.items()}
    for section in ("generator", "student", "student_ema"):
        check_map(metrics["ddp"][section]["test"])
    pseudo = {
        k: json.loads((v / "pseudo_labels.json").read_text())["results"] for k, v in runs.items()
    }
    assert list(pseudo["ddp"]) == list(pseudo["single"])  # same videos, same order
    for vid, entries in pseudo["single"].items():
        other = pseudo["ddp"][vid]
        assert [e["label"] for e in other] == [e["label"] for e in entries]
        np.testing.assert_allclose(
            [[e["score"], *e["segment"]] for e in other],
            [[e["score"], *e["segment"]] for e in entries],
            atol=1e-4,
        )
    single, ddp = metrics["single"], metrics["ddp"]
    assert ddp["generator"]["test"] == pytest.approx(single["generator"]["test"], abs=1e-6)
    for subset in ("raw", "filtered"):  # counts equal, scores within float rounding
        quality = ddp["pseudo_labels"][subset]
        assert quality == pytest.approx(single["pseudo_labels"][subset], abs=1e-6)
    assert headline(ddp) == pytest.approx(headline(single), abs=0.02)


@pytest.mark.parametrize("num_items", [12, 13])
def test_rank_shards_make_up_the_single_process_batches(
    monkeypatch: pytest.MonkeyPatch, num_items: int
) -> None:
    """With the global batch split over 2 ranks, step k of rank 0 and rank 1 together load the
    videos of step k of a single process (training pads the permutation for equal shards)."""

    def batches(rank: int, size: int) -> list[set[int]]:
        monkeypatch.setattr(sampling, "world", lambda: (rank, size))
        sampler = EpochSampler(num_items, seed=3)
        sampler.set_epoch(2)
        loader = DataLoader(
            list(range(3 * num_items)),
            batch_size=rank_batch_size(4, "generator.batch_size"),
            sampler=sampler,
            drop_last=True,
        )
        return [set(batch.tolist()) for batch in loader]

    single = batches(0, 1)
    shards = [batches(rank, 2) for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == len(single) == num_items // 4
    assert [a | b for a, b in zip(*shards, strict=True)] == single


def test_global_batch_size_must_split_over_the_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sampling, "world", lambda: (1, 2))
    assert rank_batch_size(8, "student.batch_size") == 4
    with pytest.raises(FustalError, match=r"student\.batch_size=3 .* 2 DDP processes"):
        rank_batch_size(3, "student.batch_size")
