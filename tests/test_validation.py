"""Validation without test labels (``validation=heldout|video_labels``) and the search that
selects on it (``hparams_search=filter_ema``): the held-out split, its metrics, held-out videos
absent from every stage's training, the ``optimized_metric`` the run returns, and the Optuna
search from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

from fustal.config import CONFIG_DIR
from fustal.config.checks import check_config
from fustal.data.annotations import Video
from fustal.data.views import heldout_videos
from fustal.errors import FustalError
from fustal.metrics.shape import flatten
from fustal.metrics.validation import detection_video_scores, video_map
from fustal.pipeline.objective import metric_path, optimized_value
from fustal.summarize import SweepSummaryCallback
from tests import probes
from tests.conftest import ANET_TINY, DEBUG, Forkserver, compose_train, train

PROBE = "+callbacks.seen._target_=tests.probes.TrainingVideos"


def video(vid: str, labels: list[int]) -> Video:
    segments = np.array([[0.0, 1.0]] * len(labels))
    return Video(vid, "training", 10.0, 30.0, segments, np.array(labels))


def test_heldout_videos_are_a_seeded_fraction_of_the_sorted_ids() -> None:
    ids = [f"v{i:02d}" for i in range(40)]
    picked = heldout_videos(ids, 0.1, seed=0)
    assert len(picked) == 4 and picked <= set(ids)
    assert heldout_videos(list(reversed(ids)), 0.1, seed=0) == picked  # not the file order
    assert heldout_videos(ids, 0.1, seed=1) != picked
    assert len(heldout_videos(ids[:3], 0.1, seed=0)) == 1  # at least one video
    with pytest.raises(FustalError, match="leaves none to train on"):
        heldout_videos(ids[:2], 0.9, seed=0)


def test_video_map_is_the_mean_average_precision_of_the_classes_present() -> None:
    videos = [video("a", [0]), video("b", [0, 1]), video("c", [1]), video("d", [0])]
    scores = {  # class 0: a, b, d positive; class 1: b, c positive; class 2: absent
        "a": np.array([0.9, 0.1, 0.5]),
        "b": np.array([0.2, 0.8, 0.0]),
        "c": np.array([0.4, 0.3, 0.9]),
        "d": np.array([0.6, 0.7, 0.1]),
    }
    # class 0 ranks a, d, c, b: precisions at its hits 1, 1, 3/4 -> AP (1 + 1 + 3/4) / 3;
    # class 1 ranks b, d, c, a: hits at ranks 1 and 3 -> AP (1 + 2/3) / 2; class 2 is left out
    expected = ((1 + 1 + 3 / 4) / 3 + (1 + 2 / 3) / 2) / 2
    assert video_map(scores, videos, 3) == pytest.approx(expected, abs=1e-6)
    # a video without scores counts as all zeros: class 0's a drops below every other video
    without_a = {k: v for k, v in scores.items() if k != "a"}
    assert video_map(without_a, videos, 3) < expected


def test_detection_video_scores_take_each_class_best_detection() -> None:
    rows = {
        "a": np.array([[1, 0.3, 0, 1], [1, 0.7, 2, 3], [0, 0.2, 1, 2]]),
        "b": np.zeros((0, 4)),
    }
    out = detection_video_scores(rows, 3)
    np.testing.assert_allclose(out["a"], [0.2, 0.7, 0.0])
    np.testing.assert_allclose(out["b"], [0.0, 0.0, 0.0])


# a quarter of the debug run's training videos held out, the generator's last step kept (the
# student of debug=default evaluates nothing during training, so it keeps its last epoch too)
HELDOUT_LAST = ("validation=heldout", "validation.fraction=0.25", "generator.select=last")


@pytest.fixture(scope="module")
def heldout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict[str, set[str]]]:
    """A debug run with a quarter of the training videos held out: its tmp dir, its metrics and
    the videos of its training batches by stage."""
    tmp = tmp_path_factory.mktemp("heldout")
    for seen in probes.SEEN.values():
        seen.clear()
    metrics = train(tmp, *HELDOUT_LAST, PROBE)
    return tmp, metrics, {stage: set(seen) for stage, seen in probes.SEEN.items()}


def heldout_ids(cfg_tmp: Path, *overrides: str, debug: bool = True) -> set[str]:
    from fustal.data.views import load_pipeline_data

    data = load_pipeline_data(compose_train(cfg_tmp, *overrides, debug=debug))
    assert data.generator.heldout == data.student.heldout
    return set(data.student.heldout)


def test_heldout_videos_are_scored_as_val_and_absent_from_training(
    heldout: tuple[Path, dict, dict[str, set[str]]],
) -> None:
    tmp, metrics, trained_on = heldout
    ids = heldout_ids(tmp, "validation=heldout", "validation.fraction=0.25")
    assert len(ids) == 3  # 12 debug training videos
    for stage, seen in trained_on.items():
        assert len(seen) == 9, stage  # every other training video, none held out
        assert not seen & ids, stage
    run = tmp / "run"
    for name in ("pseudo_labels.json", "pseudo_labels.filtered.json"):
        labelled = set(json.loads((run / name).read_text())["results"])
        assert labelled and not labelled & ids, name
    for model in ("generator", "student", "student_ema"):
        val = metrics[model]["val"]
        assert {"avg", "mAP@0.5", "video_map"} <= set(val), model
        assert all(0 <= v <= 1 for v in val.values())
    written = json.loads((run / "metrics.json").read_text())
    assert written["student_ema"]["val"] == metrics["student_ema"]["val"]
    cfg = compose_train(tmp, "validation=heldout")
    assert metric_path(cfg, flatten(metrics)) == "student_ema.val.avg"
    assert optimized_value(cfg, metrics) == metrics["student_ema"]["val"]["avg"]


def test_the_split_and_the_choice_are_part_of_the_stage_keys_and_the_modes_share_them(
    heldout: tuple[Path, dict, dict[str, set[str]]],
) -> None:
    """video_labels with the same split and the last weights reuses both stages of the heldout
    run and scores their held-out detections by video labels only; another fraction, or the
    generator choosing its best step on the held-out videos, trains another generator."""
    tmp, first, _ = heldout
    from fustal.pipeline.run import run_pipeline

    entries = {stage: {p.name for p in (tmp / "cache" / stage).iterdir()} for stage in probes.SEEN}
    split = ["validation.fraction=0.25", "plot_videos=0", f"paths.output_dir={tmp / 'labels'}"]
    labels = ["validation=video_labels", "generator.select=last", *split]
    metrics = run_pipeline(compose_train(tmp, *labels))
    for stage, names in entries.items():
        assert {p.name for p in (tmp / "cache" / stage).iterdir()} == names, stage
    for model in ("generator", "student", "student_ema"):
        assert metrics[model]["val"] == {"video_map": first[model]["val"]["video_map"]}
        assert metrics[model]["test"] == first[model]["test"]
    other_split = ("validation=heldout", "validation.fraction=0.4", "generator.select=last")
    best_step = ("validation=heldout", "validation.fraction=0.25", "generator.select=best")
    for name, held in (("other_split", other_split), ("best_step", best_step)):
        out = (f"paths.output_dir={tmp / name}", "plot_videos=0")
        run_pipeline(compose_train(tmp, "stage=generator", *held, *out))
    after = {p.name for p in (tmp / "cache" / "generator").iterdir()}
    assert len(after - entries["generator"]) == 2


@pytest.mark.parametrize(
    ("data", "mode"),
    [("activitynet", "heldout"), ("activitynet", "video_labels"), ("synthetic", "video_labels")],
)
def test_validation_holds_out_videos_on_both_dataset_shapes(
    tmp_path: Path, data: str, mode: str
) -> None:
    """ActivityNet-shaped data (class-agnostic student, fusion=generator_detections) and the
    synthetic default: the held-out videos reach no training batch; ``video_labels`` scores no
    segment."""
    for seen in probes.SEEN.values():
        seen.clear()
    dataset, debug = (ANET_TINY, False) if data == "activitynet" else ([], True)
    split = [*dataset, f"validation={mode}", "validation.fraction=0.2"]
    metrics = train(tmp_path, *split, PROBE, debug=debug)
    ids = heldout_ids(tmp_path, *split, debug=debug)
    train_videos = {"activitynet": 10, "synthetic": 12}[data]
    assert len(ids) == round(0.2 * train_videos)
    for stage, seen in probes.SEEN.items():
        assert len(seen) == train_videos - len(ids) and not seen & ids, stage
    for model in ("generator", "student", "student_ema"):
        val = metrics[model]["val"]
        if mode == "video_labels":
            assert set(val) == {"video_map"}, model
        else:
            assert {"avg", "mAP@0.5", "mAP@0.95", "video_map"} <= set(val), model
        assert all(0 <= v <= 1 for v in val.values())
    cfg = compose_train(tmp_path, *split, debug=debug)
    key = "video_map" if mode == "video_labels" else "avg"
    assert optimized_value(cfg, metrics) == metrics["student_ema"]["val"][key]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimized_metric=student_ema.val.avg"], "validation=test scores no val metrics"),
        (
            ["validation=video_labels", "optimized_metric=student.val.avg"],
            "scores only student.val.video_map",
        ),
        (["validation=heldout", "validation.fraction=1.5"], "expected a number in \\(0, 1\\)"),
    ],
)
def test_an_objective_the_run_cannot_score_is_a_one_line_error(
    tmp_path: Path, overrides: list[str], message: str
) -> None:
    with pytest.raises(FustalError, match=message):
        check_config(compose_train(tmp_path, *overrides))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["generator.select=best"], "generator.select=best: needs held-out videos"),
        (["student.select=best"], "student.select=best: needs held-out videos"),
        (["student.distill_from=best"], "student.distill_from=best: distillation starts"),
        (
            ["validation=heldout", "student.select=last", "student.distill_from=best"],
            "student.distill_from=best",
        ),
        (["student.distill_from=first"], "student.distill_from: expected one of last, best"),
        (
            ["validation=heldout", "student.select=best", "student.val_every=0"],
            "student.val_every=0 evaluates nothing",
        ),
        (["validation=heldout", "generator.patience=0"], "expected null or at least 1"),
        (["generator.select=first"], "generator.select: expected one of auto, best, last"),
        (["filter.min_score=[0.3,0.5]"], "hold them out with validation=heldout"),
        (
            ["validation=video_labels", "filter.min_density=[0.2,1]"],
            "this run has validation=video_labels",
        ),
        (["validation=heldout", "filter.min_score=[0.3,high]"], "expected a number, null"),
    ],
)
def test_a_choice_without_held_out_evaluations_is_a_one_line_error(
    tmp_path: Path, overrides: list[str], message: str
) -> None:
    with pytest.raises(FustalError, match=message):
        check_config(compose_train(tmp_path, *overrides))


def test_an_absent_optimized_metric_names_what_the_run_has(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, "optimized_metric=student_ema.test.mAP@0.9")
    metrics = {"student_ema": {"test": {"mAP@0.5": 0.2, "avg": 0.1}}}
    with pytest.raises(FustalError, match="student_ema.test.mAP@0.5, student_ema.test.avg"):
        optimized_value(cfg, metrics)


def search_config(*overrides: str, search: str = "filter_ema"):
    """``conf/train.yaml`` with ``hparams_search=search``, the Hydra node included."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(
            "train",
            overrides=[f"hparams_search={search}", *DEBUG, *overrides],
            return_hydra_config=True,
        )


def test_a_users_search_from_docs_extending_composes_in_their_own_config_dir(
    tmp_path: Path,
) -> None:
    text = (Path(__file__).parents[1] / "docs" / "extending.md").read_text()
    block = text.split("# my_conf/hparams_search/ema_decay.yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "hparams_search").mkdir()
    (tmp_path / "hparams_search" / "ema_decay.yaml").write_text(block)
    cfg = search_config(f"hydra.searchpath=[file://{tmp_path}]", search="ema_decay")
    assert cfg.hydra.sweeper.params == {"ema.decay": "choice(0.99, 0.995, 0.999)"}
    assert cfg.validation.mode == "video_labels"
    assert metric_path(cfg) == "student_ema.val.video_map"


def test_a_search_over_a_test_metric_warns_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    SweepSummaryCallback().on_multirun_start(search_config())
    assert capsys.readouterr().err == ""
    SweepSummaryCallback().on_multirun_start(search_config("validation=test"))
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("WARNING: optimized_metric=student_ema.test.avg is a test metric")


def test_hparams_search_runs_two_trials_and_reports_the_best(
    tmp_path: Path, forked: Forkserver
) -> None:
    sweep = tmp_path / "sweep"
    proc = forked(
        "train",
        "hparams_search=filter_ema",
        "hydra.sweeper.n_trials=2",
        "debug=default",
        "plot_videos=0",
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "is a test metric" not in proc.stderr
    values = [
        json.loads((sweep / str(n) / "metrics.json").read_text())["student_ema"]["val"]["avg"]
        for n in range(2)
    ]
    trials = [
        yaml.safe_load((sweep / str(n) / ".hydra" / "overrides.yaml").read_text()) for n in range(2)
    ]
    assert len({tuple(t) for t in trials}) == 2  # two settings of filter and EMA
    assert all(any(o.startswith("ema.decay=") for o in t) for t in trials)
    # what the Optuna sweeper optimized is what each run returned: its metrics.json value
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(values))
    # the generator trained once, reused by the other trials
    assert len(list((tmp_path / "cache" / "generator").iterdir())) == 1
    assert "reusing" in proc.stdout
    summary = (sweep / "summary.txt").read_text()
    assert "student_ema.val (optimized)" in summary
    assert f"best student_ema.val.avg: {100 * max(values):.2f}" in summary
    assert summary.count("ema.decay=") >= 3  # two trial rows and the best one


# a generator of 40 steps evaluated every 10, a student of 2 + 2 epochs evaluated every epoch
CHOOSING = (
    "validation=heldout",
    "validation.fraction=0.25",
    "generator.max_steps=40",
    "generator.val_every=10",
    "student.val_every=1",
    "student.epochs_pseudo=2",
    "plot_videos=0",
)
# held-out curves: the generator best at its 2nd and 3rd evaluation (the earlier one wins), the
# student at epoch 3, its EMA copy at epoch 1 (before distillation: not eligible) then epoch 3
CURVES = (
    "+callbacks.curve={_target_:tests.probes.ScriptedCurve,every:10,curves:{"
    "generator:[0.1,0.6,0.6,0.3],student:[0.2,0.3,0.7,0.1],student_ema:[0.9,0.1,0.8,0.3]}}"
)


def test_the_best_held_out_evaluation_is_restored_before_any_test_video_is_scored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A debug run with scripted held-out curves uses the weights of their best evaluations:
    its outputs are those of runs that stop there (generator step 20; student and EMA at epoch
    3), and each stage builds its test loader only after its choice is restored."""
    from fustal.data.generator_datamodule import GeneratorDataModule
    from fustal.data.student_datamodule import PseudoLabelDataModule
    from fustal.pipeline.stages import generator as generator_stage
    from fustal.pipeline.stages import student as student_stage

    events: list[tuple[str, str]] = []
    for cls, stage in ((GeneratorDataModule, "generator"), (PseudoLabelDataModule, "student")):
        build = cls.loader

        def loader(self, subset, train=False, build=build, stage=stage):  # noqa: ANN001, ANN202
            events.append((stage, "train" if train else subset))
            return build(self, subset, train)

        monkeypatch.setattr(cls, "loader", loader)
    for module, stage in ((generator_stage, "generator"), (student_stage, "student")):

        def chosen(trainer, choose=module.chosen, stage=stage):  # noqa: ANN001, ANN202
            events.append((stage, "chosen"))
            return choose(trainer)

        monkeypatch.setattr(module, "chosen", chosen)

    metrics = train(tmp_path / "best", *CHOOSING, "student.epochs_distill=2", CURVES)
    out = capsys.readouterr().out
    assert "generator: selected step 20 of 40 (val avg 60.0)" in out
    assert "student: epoch 3 (val avg 70.0); student + EMA: epoch 3 (val avg 80.0)" in out
    assert metrics["generator"]["selected"] == {
        "step": 20,
        "steps": 40,
        "metric": "avg",
        "value": pytest.approx(0.6),
    }
    assert metrics["student"]["selected"]["epoch"] == metrics["student_ema"]["selected"]["epoch"]
    assert metrics["student_ema"]["selected"]["epoch"] == 3
    for stage in ("generator", "student"):
        seen = [event for s, event in events if s == stage]
        chose = seen.index("chosen")
        assert "val" in seen[:chose] and "test" not in seen[:chose], seen
        assert "test" in seen[chose:], seen

    stopped = train(
        tmp_path / "stopped",
        *CHOOSING,
        "student.epochs_distill=1",
        "generator.max_steps=20",
        "generator.select=last",
        "student.select=last",
    )
    for model in ("generator", "student", "student_ema"):
        assert stopped[model]["test"] == metrics[model]["test"], model
    for name in ("pseudo_labels.json", "student_test.json", "student_ema_test.json"):
        best, last = (tmp_path / run / "run" / name for run in ("best", "stopped"))
        assert best.read_bytes() == last.read_bytes(), name


def test_distillation_starts_from_the_chosen_student(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With ``student.distill_from=best`` the student and its EMA teacher enter distillation
    with the weights of the student's best held-out evaluation (a scripted curve: epoch 1 of
    3), not with those of the last pseudo-label epoch."""
    probes.WEIGHTS.clear()
    curve = (
        "+callbacks.curve={_target_:tests.probes.ScriptedCurve,every:10,curves:{"
        "student:[0.7,0.2,0.1,0.3],student_ema:[0.1,0.1,0.1,0.1]}}"
    )
    weights = "+callbacks.weights._target_=tests.probes.StudentWeights"
    train(
        tmp_path,
        *CHOOSING,
        "generator.max_steps=10",
        "student.epochs_pseudo=3",
        "student.epochs_distill=1",
        "student.distill_from=best",
        curve,
        weights,
    )
    assert "distillation starts from the student of epoch 1 (val 70.0)" in capsys.readouterr().out
    chosen, last, start = (probes.WEIGHTS[k] for k in ("end 0", "end 2", "start 3"))
    model = [k for k in chosen if k.startswith("model.")]
    assert model and any(not torch.equal(chosen[k], last[k]) for k in model)
    for name in model:
        torch.testing.assert_close(start[name], chosen[name], rtol=0, atol=0)
        teacher = "ema.module." + name.removeprefix("model.")
        torch.testing.assert_close(start[teacher], chosen[name], rtol=0, atol=0)


def test_the_generator_stops_after_patience_evaluations_without_improvement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    curve = "+callbacks.curve={_target_:tests.probes.ScriptedCurve,every:10,curves:{"
    falling = curve + "generator:[0.5,0.4,0.3,0.2]}}"
    metrics = train(tmp_path, *CHOOSING, "stage=generator", "generator.patience=1", falling)
    assert metrics["generator"]["selected"] == {
        "step": 10,
        "steps": 20,
        "metric": "avg",
        "value": pytest.approx(0.5),
    }
    assert (
        "selected step 10 of 40 (val avg 50.0; stopped early at step 20)" in capsys.readouterr().out
    )


def test_filter_thresholds_given_as_lists_are_chosen_on_the_held_out_videos(
    heldout: tuple[Path, dict, dict[str, set[str]]],
) -> None:
    """``filter.min_density`` and ``filter.min_score`` as lists: the generator's held-out
    proposals are filtered with every pair, the pair with the best F1 at tIoU 0.5 filters the
    training videos (as that pair given as numbers does), and the choice is recorded."""
    tmp, _, _ = heldout
    from fustal.data.views import load_pipeline_data
    from fustal.metrics.quality import filter_choice
    from fustal.pipeline.run import run_pipeline
    from fustal.pseudo.filters import filter_rows, prior_filter

    grid = {"min_density": [0.2, 1.0, 2.0], "min_score": [0.3, 0.5]}
    lists = [f"filter.{k}=[{','.join(map(str, v))}]" for k, v in grid.items()]
    out = [*HELDOUT_LAST, "stage=filter", "plot_videos=0"]
    chosen = run_pipeline(compose_train(tmp, *out, *lists, f"paths.output_dir={tmp / 'grid'}"))
    choice = chosen["pseudo_labels"]["filter_choice"]
    assert choice["settings"] == 6

    cfg = compose_train(tmp, *HELDOUT_LAST)
    data = load_pipeline_data(cfg).student
    parts = {  # of each generator entry (another test adds two more to this cache)
        entry: json.loads((entry / "manifest.json").read_text())["config"]["key_parts"]
        for entry in (tmp / "cache" / "generator").iterdir()
    }
    (entry,) = (  # HELDOUT_LAST's: a quarter held out, the last step kept
        e for e, kp in parts.items() if kp["heldout"]["fraction"] == 0.25 and "select" not in kp
    )
    held_out = {
        vid: np.array([[data.classes.index(d["label"]), d["score"], *d["segment"]] for d in dets])
        for vid, dets in json.loads((entry / "generator_val.json").read_text())["results"].items()
    }
    settings = [(d, s) for d in grid["min_density"] for s in grid["min_score"]]
    kept = [
        filter_rows(held_out, lambda r, d=d, s=s: prior_filter(r, d, s))[0] for d, s in settings
    ]
    best, scores = filter_choice(kept, data.val_videos(), data.num_classes)
    assert (choice["min_density"], choice["min_score"]) == settings[best]
    assert choice["f1@0.5"] == pytest.approx(max(scores))

    fixed = [f"filter.{k}={choice[k]}" for k in grid]
    run_pipeline(compose_train(tmp, *out, *fixed, f"paths.output_dir={tmp / 'fixed'}"))
    name = "pseudo_labels.filtered.json"
    assert (tmp / "grid" / name).read_bytes() == (tmp / "fixed" / name).read_bytes()


def test_filter_choice_takes_the_best_f1_at_tiou_half() -> None:
    from fustal.metrics.quality import filter_choice

    videos = [video("a", [0]), video("b", [1])]  # one segment [0, 1] each
    hit_a, hit_b = [0, 0.9, 0.0, 1.0], [1, 0.8, 0.0, 1.0]
    miss = [0, 0.7, 5.0, 6.0]
    candidates = [
        {"a": np.array([hit_a, miss]), "b": np.zeros((0, 4))},  # P 1/2, R 1/2: F1 1/2
        {"a": np.array([hit_a]), "b": np.array([hit_b, miss])},  # P 2/3, R 1: F1 0.8
        {"a": np.array([hit_a]), "b": np.array([hit_b])},  # P 1, R 1: F1 1
    ]
    best, scores = filter_choice(candidates, videos, 2)
    assert best == 2
    np.testing.assert_allclose(scores, [0.5, 0.8, 1.0])


@pytest.mark.parametrize(
    ("experiment", "mode"),
    [
        ("activitynet13", "heldout"),
        ("activitynet12", "heldout"),
        ("activitynet13_synthetic", "heldout"),
        ("activitynet12_synthetic", "heldout"),
        ("thumos14", "test"),
        ("synthetic", "test"),
    ],
)
def test_activitynet_experiments_choose_on_held_out_videos_and_thumos_stays_research_exact(
    tmp_path: Path, experiment: str, mode: str
) -> None:
    from fustal.config import selects_best

    cfg = compose_train(tmp_path, f"+experiment={experiment}", debug=False)
    check_config(cfg)
    assert cfg.validation.mode == mode
    chooses = mode != "test"
    assert selects_best(cfg.generator.select, mode) is chooses
    assert (selects_best(cfg.student.select, mode) and cfg.student.val_every == 1) is chooses
    assert (cfg.student.distill_from == "best") is chooses
