"""The pipeline in process at the debug scale (the real composed config, real Lightning
Trainers, real files): stage outputs, the stage cache (reuse, keys, code changes, refresh,
corruption) and errors on pseudo-label files."""

from __future__ import annotations

import json
from dataclasses import fields, is_dataclass
from pathlib import Path

import numpy as np
import pytest

from fustal.errors import FustalError
from fustal.metrics.shape import nest
from tests import probes
from tests.conftest import DebugRun, compose_train, train

MAP_KEYS = [f"mAP@{t}" for t in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)] + ["avg"]


def check_map(section: dict) -> None:
    assert list(section) == MAP_KEYS
    assert all(0.0 <= v <= 1.0 for v in section.values())


def entries(cache: Path, stage: str) -> list[Path]:
    return sorted((cache / stage).iterdir()) if (cache / stage).is_dir() else []


def test_stage_generator_writes_pseudo_labels_and_metrics(tmp_path: Path) -> None:
    metrics = train(tmp_path, "stage=generator")
    run = tmp_path / "run"
    pseudo = json.loads((run / "pseudo_labels.json").read_text())["results"]
    (root,) = (tmp_path / "data" / "synthetic").iterdir()
    assert set(pseudo) == set((root / "split_train.txt").read_text().split())
    entry = next(e for video in pseudo.values() for e in video)
    assert set(entry) == {"label", "score", "segment"} and entry["segment"][0] < entry["segment"][1]
    assert json.loads((run / "generator_test.json").read_text())["results"]
    assert json.loads((run / "metrics.json").read_text()) == metrics
    check_map(metrics["generator"]["test"])
    raw = metrics["pseudo_labels"]["raw"]
    assert raw["count"] == sum(len(v) for v in pseudo.values())
    assert 0.0 <= raw["precision@0.5"] <= 1.0 and 0.0 <= raw["recall@0.5"] <= 1.0
    assert "student" not in metrics
    (entry_dir,) = entries(tmp_path / "cache", "generator")
    assert not (entry_dir / "checkpoints").exists()  # resume state dropped once finished
    assert not list(run.glob("**/*.tmp"))


def test_filter_sweep_reuses_the_generator_and_trains_one_student_each(
    tmp_path: Path, capsys: pytest.CaptureFixture, debug_run: DebugRun
) -> None:
    data = debug_run.seed(tmp_path)  # the filter=fustal run, trained
    first = train(tmp_path, data, "filter=fustal")
    assert first == debug_run.metrics
    for section in ("student", "student_ema"):
        check_map(first[section]["test"])
    filtered = json.loads((tmp_path / "run" / "pseudo_labels.filtered.json").read_text())
    count = sum(len(v) for v in filtered["results"].values())
    assert first["pseudo_labels"]["filtered"]["count"] == count
    assert count <= first["pseudo_labels"]["raw"]["count"]
    assert "fustal results" in capsys.readouterr().out

    second = train(tmp_path, data, "filter=score")
    out = capsys.readouterr().out
    assert "generator: reusing" in out and "student: reusing" not in out
    assert second["generator"] == first["generator"]
    assert len(entries(tmp_path / "cache", "generator")) == 1
    assert len(entries(tmp_path / "cache", "student")) == 2


def test_cache_keys_cover_what_a_stage_reads_and_nothing_else(
    tmp_path: Path, capsys: pytest.CaptureFixture, debug_run: DebugRun
) -> None:
    """Settings a stage does not read (the student's ground-truth epochs in a weak run, the
    proposal worker count, DataLoader workers, the progress bar) reuse its entry; a setting it
    reads (the generator's steps) recomputes it and everything downstream."""
    data = debug_run.seed(tmp_path)
    train(
        tmp_path,
        data,
        "student.full_epochs=7",
        "generator.module.proposal_workers=1",
        "num_workers=1",
        "trainer.enable_progress_bar=true",
    )
    out = capsys.readouterr().out
    assert "generator: reusing" in out and "student: reusing" in out
    train(tmp_path, data, "generator.max_steps=20")
    out = capsys.readouterr().out
    assert "generator: reusing" not in out and "student: reusing" not in out
    assert len(entries(tmp_path / "cache", "generator")) == 2
    assert len(entries(tmp_path / "cache", "student")) == 2


def test_cache_refresh_recomputes_finished_entries(
    tmp_path: Path, capsys: pytest.CaptureFixture, debug_run: DebugRun
) -> None:
    data = debug_run.seed(tmp_path)
    first = train(tmp_path, data, "stage=generator")
    assert "generator: reusing" in capsys.readouterr().out
    second = train(tmp_path, data, "stage=generator", "cache=refresh")
    out = capsys.readouterr().out
    assert "generator: cache=refresh: recomputing" in out and "reusing" not in out
    assert second == first  # same inputs, same code: the same results
    assert len(entries(tmp_path / "cache", "generator")) == 1


def test_full_supervision_is_the_upper_bound_row(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    metrics = train(tmp_path, "supervision=full", "ema=none")
    check_map(metrics["student"]["test"])
    assert "generator" not in metrics and "student_ema" not in metrics
    assert "upper bound" in capsys.readouterr().out
    assert not entries(tmp_path / "cache", "generator")


def test_corrupt_cache_entry_is_recomputed(
    tmp_path: Path, capsys: pytest.CaptureFixture, debug_run: DebugRun
) -> None:
    data = debug_run.seed(tmp_path)
    (entry,) = entries(tmp_path / "cache", "generator")
    pseudo = entry / "pseudo_labels.json"
    pseudo.write_text(pseudo.read_text()[:100])
    train(tmp_path, data, "stage=generator")
    assert "generator: reusing" not in capsys.readouterr().out
    assert json.loads(pseudo.read_text())["results"]


def test_raw_pseudo_label_quality_comes_from_the_generator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, debug_run: DebugRun
) -> None:
    """The filter scores only what it filtered: the raw labels' quality is the generator's."""
    import fustal.pipeline.stages.filter as filter_stage

    calls = []
    real = filter_stage.rows_quality

    def counted(rows, *args):
        calls.append(sum(len(r) for r in rows.values()))
        return real(rows, *args)

    monkeypatch.setattr(filter_stage, "rows_quality", counted)
    metrics = train(tmp_path, debug_run.seed(tmp_path), "stage=filter")
    assert calls == [metrics["pseudo_labels"]["filtered"]["count"]]


def test_pseudo_label_file_for_the_student_stage(tmp_path: Path, debug_run: DebugRun) -> None:
    pseudo = debug_run.run / "pseudo_labels.json"
    metrics = train(
        tmp_path, f"paths.data_dir={debug_run.data}", "stage=student", f"pseudo_labels={pseudo}"
    )
    assert "generator" not in metrics
    check_map(metrics["student_ema"]["test"])
    assert metrics["pseudo_labels"]["raw"]["count"] > metrics["pseudo_labels"]["filtered"]["count"]


def test_the_student_ignores_the_regions_of_unfiltered_labels_above_ignore_score(
    tmp_path: Path, debug_run: DebugRun
) -> None:
    """``student.data.ignore_score``: the student's DataModule gets the pseudo labels the filter
    received (here a pseudo-label file's) that score above it, and every training batch
    carries them as regions to leave out."""
    probes.IGNORED.clear()
    pseudo = debug_run.run / "pseudo_labels.json"
    train(
        tmp_path,
        f"paths.data_dir={debug_run.data}",
        "stage=student",
        f"pseudo_labels={pseudo}",
        "student.data.ignore_score=0.5",
        "+callbacks.ignored._target_=tests.probes.IgnoredRegions",
    )
    raw = json.loads(pseudo.read_text())["results"]
    got = probes.IGNORED["rows"]
    assert got.keys() == raw.keys()
    for vid, rows in raw.items():
        above = [[r["score"], *r["segment"]] for r in rows if r["score"] > 0.5]
        np.testing.assert_allclose(got[vid][:, 1:], np.reshape(above, (-1, 3)), rtol=1e-6)
    kept = sum(len(rows) for rows in got.values())
    assert 0 < kept < sum(len(rows) for rows in raw.values())
    assert probes.IGNORED["batches"] == {True}


def test_bad_pseudo_label_file_names_the_video(tmp_path: Path) -> None:
    bad = tmp_path / "bad_pseudo.json"
    bad.write_text(json.dumps({"results": {"no_such_video": []}}))
    with pytest.raises(FustalError, match="no_such_video"):
        train(tmp_path, "stage=student", f"pseudo_labels={bad}")


def test_in_process_config_is_checked_like_the_command_line(tmp_path: Path) -> None:
    from fustal.pipeline.run import run_pipeline

    with pytest.raises(FustalError, match=r"generator.max_step: unknown key.*generator.max_steps"):
        run_pipeline(compose_train(tmp_path, "+generator.max_step=10"))


def assert_same(got: object, want: object, where: str = "outputs") -> None:
    """Equal outputs: dataclasses field by field, mappings key by key, arrays elementwise."""
    if is_dataclass(want):
        assert type(got) is type(want), where
        for f in fields(want):
            assert_same(getattr(got, f.name), getattr(want, f.name), f"{where}.{f.name}")
    elif isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), where
        for key in want:
            assert_same(got[key], want[key], f"{where}[{key!r}]")
    elif isinstance(want, np.ndarray | float):
        np.testing.assert_array_equal(got, want, err_msg=where)
    else:
        assert got == want, where


@pytest.mark.parametrize("validation", ["test", "heldout"])
def test_every_cached_stage_loads_back_what_it_saved(tmp_path: Path, validation: str) -> None:
    """The Stage interface's round trip: outputs computed in memory, saved by the runner, loaded
    back from the entry equal them (fusion on, so the generator's video scores are outputs; with
    held-out videos, their detections too)."""
    from fustal.config import make_console
    from fustal.data.views import load_pipeline_data
    from fustal.pipeline.run import stage_plan
    from fustal.pipeline.stage import RunContext, run_plan, written_files

    cfg = compose_train(tmp_path, "fusion=generator", "plot_videos=0", f"validation={validation}")
    ctx = RunContext(cfg, tmp_path / "run", make_console(), load_pipeline_data(cfg))
    ctx.output_dir.mkdir()
    plan = stage_plan(cfg)
    results = run_plan(ctx, plan)
    assert list(results) == ["generator", "filter", "student"]
    for cls in plan:
        if not cls.cached:
            continue
        upstream = {name: results[name] for name in cls.inputs(cfg)}
        stage = cls(ctx, upstream)
        assert stage.key() == results[cls.name].key
        folder = tmp_path / "cache" / cls.name / stage.key()
        manifest = json.loads((folder / "manifest.json").read_text())
        assert sorted(manifest["files"]) == written_files(folder)  # what the stage wrote
        assert_same(stage.load(folder), results[cls.name].outputs, cls.name)
    # the runner recorded every stage's metrics
    written = json.loads((ctx.output_dir / "metrics.json").read_text())
    assert written == nest(ctx.metrics)
    assert {"generator", "pseudo_labels", "student", "student_ema"} <= set(written)
