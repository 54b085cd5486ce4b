"""The Hydra config tree: every group option composes and resolves, the group files carry the
METHOD.md numbers, and ``python -m fustal.train`` validates data and reports bad input."""

from __future__ import annotations

import dataclasses
import inspect
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import hydra
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

import fustal.config
from fustal.config.schema import InferenceSchema, TrainSchema, TriDetSchema
from fustal.pseudo.proposals import threshold_values
from fustal.student.decode import DECODING
from tests.conftest import REPO_ROOT, Forkserver

THUMOS_TIOU = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
ANET_TIOU = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
DATA = f"{REPO_ROOT}/data"
# a key the composed config does not have
ABSENT = object()

# The specification: every number of METHOD.md that the group files carry, keyed by config path.
METHOD_GENERATOR = {
    "module.net.hidden_dim": 2048,
    "module.net.dropout": 0.7,
    "module.r_easy": 5,  # k_easy = N // 5
    "module.r_hard": 20,  # k_hard = N // 20
    "module.m": 3,
    "module.M": 6,
    "module.mining_dropout": 0.6,
    "module.temperature": 0.07,
    "module.contrast_weight": 0.01,
    "module.cross_video": True,
    "module.cross_video_weight": 0.2,
    "module.optimizer.lr": 1e-4,
    "module.optimizer.betas": [0.9, 0.999],
    "module.optimizer.weight_decay": 5e-4,
    "data.batch_size": 16,
    "max_steps": 6000,
    "val_every": 100,
    "data.num_segments": 750,
    "module.proposals.class_thresh": 0.2,
    "module.proposals.upscale": 24,
    "module.proposals.nms_thresh": 0.5,
    "module.proposals.oic_lambda": 0.25,
    "module.proposals.oic_gamma": 0.2,
}
METHOD_CAS_THRESHOLDS = np.arange(0.0, 0.25, 0.025)  # 10 values
METHOD_ACTIONNESS_THRESHOLDS = np.arange(0.1, 0.925, 0.025)  # 33 values
METHOD_STUDENT = {
    "module.net.embd_dim": 512,
    "module.net.fpn_dim": 512,
    "module.net.head_dim": 512,
    "module.net.arch": [2, 2, 5],
    "module.net.sgp_mlp_dim": 768,
    "module.net.sgp_kernel": 1,
    "module.net.k": 5,
    "module.net.num_bins": 16,
    "module.net.max_seq_len": 2304,
    "module.net.drop_path": 0.1,
    "module.net.init_conv_vars": 0.0,
    "module.net.prior_prob": 0.01,
    "module.net.regression_ranges": [[0, 4], [4, 8], [8, 16], [16, 32], [32, 64], [64, 10000]],
    "module.net.center_sample_radius": 1.5,
    "module.net.video_dropout": 0.7,
    "module.optimizer.lr": 1e-4,
    "module.optimizer.weight_decay": 0.05,
    "module.scheduler.warmup_epochs": 1,
    "module.scheduler.schedule": "constant",
    "data.batch_size": 8,
    "gradient_clip_val": 1.0,
    "module.video_loss_weight": 1.0,
    "epochs_pseudo": 61,  # epochs 0..60 on filtered pseudo labels
    "epochs_distill": 40,  # epochs 61..100 on EMA predictions
    "full_epochs": 40,
    "full_schedule": "cosine",
    "data.augment.crop_ratio": [0.9, 1.0],
    "data.augment.crop_tries": 200,
    "data.augment.crop_min_keep": 0.5,
    "module.net.input_noise": 0.0005,
    "module.inference.pre_nms_thresh": 0.001,
    "module.inference.pre_nms_topk": 2000,
    "module.inference.min_duration": 0.05,
    "module.inference.nms_sigma": 0.5,
    "module.inference.min_score": 0.001,
    "module.inference.max_seg_num": 2000,
}
METHOD_FILTER = {"min_density": 0.2, "min_score": 0.4}
METHOD_EMA = {"decay": 0.999, "score_thresh": 0.4, "warmup": False}


@pytest.fixture(scope="module")
def hydra_context() -> Iterator[None]:
    fustal.config.register_resolvers()
    with initialize_config_dir(config_dir=str(fustal.config.CONFIG_DIR), version_base="1.3"):
        yield


def compose_config(*overrides: str) -> DictConfig:
    """``conf/train.yaml`` with overrides (output dir pinned: no Hydra run here)."""
    return compose(
        "train", overrides=[*overrides, "paths.output_dir=/tmp/out"], return_hydra_config=True
    )


def resolved(cfg: DictConfig) -> dict:
    """Everything but the ``hydra`` node, fully resolved (fails on a broken interpolation)."""
    cfg = cfg.copy()
    with open_dict(cfg):
        del cfg["hydra"]
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def get(node: dict, dotted: str):
    for part in dotted.split("."):
        node = node.get(part, ABSENT) if isinstance(node, dict) else ABSENT
    return node


def assert_matches(node: dict, spec: dict, where: str) -> None:
    for key, want in spec.items():
        got = get(node, key)
        if isinstance(want, float):
            assert got == pytest.approx(want), f"{where}.{key}: {got} != METHOD {want}"
        else:
            assert got == want, f"{where}.{key}: {got} != METHOD {want}"


# ---------------------------------------------------------------- every group option


GROUP_OPTIONS = [
    ("dataset=synthetic", {"dataset.root": None, "dataset.synthetic.num_classes": 5}),
    (
        "dataset=thumos14",
        {"dataset.root": f"{DATA}/thumos14", "dataset.tiou_thresholds": THUMOS_TIOU},
    ),
    (
        "dataset=activitynet13",
        {"dataset.root": f"{DATA}/activitynet13", "dataset.tiou_thresholds": ANET_TIOU},
    ),
    (
        "dataset=activitynet13_synthetic",
        {
            "dataset.root": None,
            "dataset.tiou_thresholds": ANET_TIOU,
            "dataset.synthetic.layout": "activitynet",
        },
    ),
    (
        "dataset=activitynet12",
        {"dataset.root": f"{DATA}/activitynet12", "dataset.tiou_thresholds": ANET_TIOU},
    ),
    (
        "dataset=activitynet12_synthetic",
        {
            "dataset.tiou_thresholds": ANET_TIOU,
            "dataset.synthetic.layout": "activitynet",
            "dataset.synthetic.annotation_file": str(
                REPO_ROOT
                / "data/annotations/activitynet12/activity_net.v1-2.min-missing-removed.json"
            ),
        },
    ),
    ("dataset=custom", {"dataset.root": None, "dataset.synthetic": ABSENT}),
    ("features@features.generator=i3d_nonoverlap", {"features.generator.layout": "nonoverlap"}),
    ("features@features.generator=i3d_overlap", {"features.generator.layout": "overlap"}),
    ("features@features.generator=resized", {"features.generator.layout": "resized"}),
    ("features@features.student=i3d_nonoverlap", {"features.student.layout": "nonoverlap"}),
    ("features@features.student=i3d_overlap", {"features.student.layout": "overlap"}),
    ("features@features.student=resized", {"features.student.layout": "resized"}),
    (
        "features@features.generator=custom",
        {"features.generator.sidecar": "features/features.json"},
    ),
    ("features@features.student=custom", {"features.student.video_table": "videos.csv"}),
    ("generator=cola_cv", {"generator.module.cross_video": True}),
    (
        "generator=cola",
        {
            "generator.module.cross_video": False,
            "generator.module.temperature": 0.07,
        },
    ),
    (
        "filter=fustal",
        {"filter.min_density": 0.2, "filter.min_score": 0.4},
    ),
    ("filter=score", {"filter.min_density": None, "filter.min_score": 0.4}),
    (
        "filter=density",
        {"filter.min_density": 0.2, "filter.min_score": None},
    ),
    ("filter=none", {"filter.min_density": None, "filter.min_score": None}),
    (
        "filter=long_actions",
        {"filter.min_density": 1.0, "filter.min_score": 0.5},
    ),
    ("fusion=none", {"fusion.source": None}),
    (
        "fusion=generator",
        {"fusion.source": "generator", "fusion.topk": 2, "fusion.rule": "sqrt"},
    ),
    (
        "fusion=generator_detections",
        {
            "fusion.source": "generator",
            "fusion.level": "detections",
            "fusion.vote_tiou": 0.6,
            "fusion.class_weight": 0.5,
        },
    ),
    ("fusion=file", {"fusion.source": "file", "fusion.score_file": None, "fusion.topk": 2}),
    ("student=tridet", {"student.module.net.num_bins": 16}),
    ("ema=mean_teacher", {"ema.enabled": True, "ema.score_thresh": 0.4}),
    ("ema=none", {"ema.enabled": False}),
    ("trainer=default", {"trainer.accelerator": "auto", "trainer.devices": 1}),
    ("trainer=cpu", {"trainer.accelerator": "cpu", "trainer.devices": 1}),
    ("trainer=gpu", {"trainer.accelerator": "gpu", "trainer.devices": 1}),
    (
        "trainer=ddp",
        {"trainer.accelerator": "gpu", "trainer.devices": 2, "trainer.strategy": "ddp"},
    ),
    (
        "trainer=ddp_cpu",
        {"trainer.accelerator": "cpu", "trainer.devices": 2, "trainer.strategy": "ddp"},
    ),
    ("logger=csv", {"logger.csv._target_": "pytorch_lightning.loggers.CSVLogger"}),
    (
        "logger=tensorboard",
        {"logger.tensorboard._target_": "pytorch_lightning.loggers.TensorBoardLogger"},
    ),
    ("logger=wandb", {"logger.wandb._target_": "pytorch_lightning.loggers.WandbLogger"}),
    ("logger=none", {"logger": {}}),
    ("scale=tiny", {"generator.module.net.hidden_dim": 256, "student.module.net.embd_dim": 64}),
    (
        "scale=paper",
        {"generator.module.net.hidden_dim": 2048, "student.module.net.embd_dim": 512},
    ),
    ("callbacks=default", {"callbacks.model_checkpoint.filename": "last"}),
    ("callbacks=none", {"callbacks": {}}),
    ("debug=default", {"dataset.synthetic.train_videos": 12, "logger": {}}),
]


@pytest.mark.parametrize(("override", "expected"), GROUP_OPTIONS, ids=[o for o, _ in GROUP_OPTIONS])
def test_every_group_option_composes(hydra_context: None, override: str, expected: dict) -> None:
    """Each option composes, passes the schema check and sets what its file says."""
    from fustal.config.checks import check_config

    composed = compose_config(override)
    # fusion=file needs its file, detection-level fusion a class-agnostic student (refused
    # without: tests/test_fusion.py)
    needs = {
        "fusion=file": "fusion.score_file=scores.json",
        "fusion=generator_detections": "student.module.class_agnostic=true",
    }
    check_config(compose_config(override, needs[override]) if override in needs else composed)
    cfg = resolved(composed)
    for key, want in expected.items():
        assert get(cfg, key) == want, key
    # the rest of the tree is still the default
    assert cfg["stage"] == "all" and cfg["supervision"] == "weak"
    assert cfg["paths"]["root_dir"] == str(REPO_ROOT)


def test_every_option_file_is_covered() -> None:
    """A new option file in conf/ must be added to the table above."""
    covered = {o.split("=")[0].split("@")[0]: set() for o, _ in GROUP_OPTIONS}
    for option, _ in GROUP_OPTIONS:
        group, name = option.split("=")
        covered[group.split("@")[0]].add(name)
    for group, names in covered.items():
        files = {p.stem for p in (fustal.config.CONFIG_DIR / group).glob("*.yaml")}
        assert files == names, group


def test_feature_layout_defaults(hydra_context: None) -> None:
    cfg = resolved(compose_config())
    gen, stu = cfg["features"]["generator"], cfg["features"]["student"]
    assert (gen["layout"], gen["window_frames"], gen["stride_frames"], gen["fps"]) == (
        "nonoverlap",
        16,
        16,
        25,
    )
    assert (stu["layout"], stu["window_frames"], stu["stride_frames"], stu["fps"]) == (
        "overlap",
        16,
        4,
        None,
    )
    assert gen["streams"] == ["rgb", "flow"] and stu["streams"] is None


@pytest.mark.parametrize("name", ["csv", "tensorboard", "wandb"])
def test_loggers_instantiate(hydra_context: None, tmp_path: Path, name: str) -> None:
    cfg = compose(
        "train",
        overrides=[f"logger={name}", f"paths.output_dir={tmp_path}"],
        return_hydra_config=True,
    )
    logger = hydra.utils.instantiate(cfg.logger[name])
    assert type(logger).__name__.lower().startswith(name)
    assert str(tmp_path) in str(logger.save_dir)


# ---------------------------------------------------------------- experiments


def test_experiment_synthetic_is_the_base_config(hydra_context: None) -> None:
    assert resolved(compose_config("+experiment=synthetic")) == resolved(compose_config())


@pytest.mark.parametrize("experiment", ["thumos14", "thumos14_full"])
def test_experiment_thumos14(hydra_context: None, experiment: str) -> None:
    cfg = resolved(compose_config(f"+experiment={experiment}"))
    assert cfg["dataset"]["root"] == str(REPO_ROOT / "data" / "thumos14")
    assert cfg["dataset"]["tiou_thresholds"] == THUMOS_TIOU
    assert cfg["generator"]["max_steps"] == 6000
    assert cfg["generator"]["module"]["net"]["hidden_dim"] == 2048
    assert cfg["generator"]["data"]["num_segments"] == 750
    net = cfg["student"]["module"]["net"]
    assert net["embd_dim"] == 512 and net["arch"] == [2, 2, 5] and net["max_seq_len"] == 2304
    assert cfg["supervision"] == ("full" if experiment == "thumos14_full" else "weak")
    gen, stu = cfg["features"]["generator"], cfg["features"]["student"]
    assert (gen["layout"], stu["layout"]) == ("nonoverlap", "overlap")
    bundled = REPO_ROOT / "data" / "annotations" / "thumos14"
    assert gen["annotation_file"] == str(bundled / "gt.json")
    assert gen["split_files"] == {
        "train": str(bundled / "split_train.txt"),
        "test": str(bundled / "split_test.txt"),
    }
    assert stu["annotation_file"] == str(bundled / "thumos14.json")
    assert all(Path(p).is_file() for p in [*gen["split_files"].values(), stu["annotation_file"]])


def test_experiment_activitynet13(hydra_context: None) -> None:
    cfg = resolved(compose_config("+experiment=activitynet13"))
    assert cfg["dataset"]["root"] == f"{DATA}/activitynet13"
    tious = cfg["dataset"]["tiou_thresholds"]
    assert len(tious) == 10
    np.testing.assert_allclose(tious, np.linspace(0.5, 0.95, 10))
    for stage in ("generator", "student"):
        feats = cfg["features"][stage]
        assert feats["layout"] == "resized"
        assert (feats["train_subset"], feats["test_subset"]) == ("training", "validation")
        assert feats["annotation_file"] == str(
            REPO_ROOT / "data/annotations/activitynet13/activitynet13.json"
        )
        assert Path(feats["annotation_file"]).is_file()
    assert cfg["generator"]["data"]["num_segments"] == 100
    # CoLA's weight decay, meant for 20 classes, scaled to ActivityNet's class count
    assert cfg["generator"]["module"]["weight_decay_classes"] == 20
    # the ActivityNet recipe: TriDet's configs/anet_tsp.yaml, fusion of the generator's detections
    student = cfg["student"]["module"]
    assert student["net"]["max_seq_len"] == 768 and student["net"]["embd_dim"] == 256
    assert (student["net"]["sgp_kernel"], student["net"]["k"], student["net"]["num_bins"]) == (
        15,
        1.3,
        12,
    )
    assert student["class_agnostic"] and cfg["fusion"]["source"] == "generator"
    assert cfg["fusion"]["level"] == "detections"
    assert (student["label_smoothing"], student["inference"]["voting_thresh"]) == (0.1, 0.95)
    assert student["scheduler"] == {**student["scheduler"], "warmup_epochs": 10}
    assert (cfg["filter"]["min_density"], cfg["filter"]["min_score"]) == (1.0, 0.5)
    assert cfg["supervision"] == "weak"


def test_experiment_activitynet12_reads_the_bundled_v12_file(hydra_context: None) -> None:
    cfg = resolved(compose_config("+experiment=activitynet12"))
    assert cfg["dataset"]["root"] == f"{DATA}/activitynet12"
    for stage in ("generator", "student"):
        path = Path(cfg["features"][stage]["annotation_file"])
        assert path.parent == REPO_ROOT / "data/annotations/activitynet12" and path.is_file()
    # the rest is +experiment=activitynet13's recipe
    assert cfg["student"]["module"]["net"]["max_seq_len"] == 768
    assert cfg["fusion"]["source"] == "generator"


def test_experiment_with_further_overrides(hydra_context: None) -> None:
    cfg = resolved(compose_config("+experiment=thumos14", "filter=score", "generator.max_steps=10"))
    assert cfg["filter"]["min_density"] is None and cfg["filter"]["min_score"] == 0.4
    assert cfg["generator"]["max_steps"] == 10 and cfg["dataset"]["root"] == f"{DATA}/thumos14"


# ---------------------------------------------------------------- METHOD.md numbers


def test_generator_group_matches_method(hydra_context: None) -> None:
    cfg = resolved(compose_config("scale=paper"))
    assert_matches(cfg["generator"], METHOD_GENERATOR, "generator")
    proposals = cfg["generator"]["module"]["proposals"]
    np.testing.assert_allclose(threshold_values(proposals["cas_thresholds"]), METHOD_CAS_THRESHOLDS)
    np.testing.assert_allclose(
        threshold_values(proposals["actionness_thresholds"]), METHOD_ACTIONNESS_THRESHOLDS
    )
    assert len(METHOD_CAS_THRESHOLDS) == 10 and len(METHOD_ACTIONNESS_THRESHOLDS) == 33
    raw = OmegaConf.to_container(
        OmegaConf.load(fustal.config.CONFIG_DIR / "generator/cola_cv.yaml")
    )
    assert_matches(raw, METHOD_GENERATOR, "cola_cv.yaml")


def test_student_group_matches_method(hydra_context: None) -> None:
    cfg = resolved(compose_config("scale=paper"))
    assert_matches(cfg["student"], METHOD_STUDENT, "student")
    raw = OmegaConf.to_container(OmegaConf.load(fustal.config.CONFIG_DIR / "student/tridet.yaml"))
    assert_matches(raw, METHOD_STUDENT, "tridet.yaml")


def schema_targets(schema: type, where: str = "") -> Iterator[tuple[str, type, str]]:
    """``(dotted node, schema dataclass, _target_)`` of every node of ``schema`` with a target."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    target = fields.get("_target_")
    if target is not None and isinstance(target.default, str):
        yield where, schema, target.default
    for name, f in fields.items():
        if f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
            if dataclasses.is_dataclass(value):
                yield from schema_targets(type(value), f"{where}.{name}".lstrip("."))


def test_the_schema_states_its_targets_defaults_and_the_yaml_lists_every_setting(
    hydra_context: None,
) -> None:
    """A schema default is its target's own signature default (the decoding settings: those of
    fustal.student.decode.DECODING), and the group files list every setting of the student's
    network and decoding (what a user may set)."""
    checked = 0
    for where, schema, target in schema_targets(TrainSchema):
        params = inspect.signature(hydra.utils.get_object(target)).parameters
        for f in dataclasses.fields(schema):
            param = params.get(f.name)
            if param is None or param.default is inspect.Parameter.empty or param.default is None:
                continue
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            as_list = json.loads(json.dumps(param.default))  # tuples as lists
            assert default == as_list, f"{where}.{f.name}: schema {default!r}, {target} {as_list!r}"
            checked += 1
    assert checked > 40
    inference = resolved(compose_config("scale=paper"))["student"]["module"]["inference"]
    assert dataclasses.asdict(InferenceSchema()) == dataclasses.asdict(DECODING) == inference
    net = resolved(compose_config("scale=paper"))["student"]["module"]["net"]
    assert set(net) == {f.name for f in dataclasses.fields(TriDetSchema)}


def test_filter_and_ema_groups_match_method(hydra_context: None) -> None:
    cfg = resolved(compose_config("scale=paper"))
    assert_matches(cfg["filter"], METHOD_FILTER, "filter")
    assert_matches(cfg["ema"], METHOD_EMA, "ema")
    for group, name, spec in (
        ("filter", "fustal", METHOD_FILTER),
        ("ema", "mean_teacher", METHOD_EMA),
    ):
        raw = OmegaConf.load(fustal.config.CONFIG_DIR / group / f"{name}.yaml")
        assert_matches(OmegaConf.to_container(raw), spec, f"{name}.yaml")


# What scale=tiny may change (sizes, budgets and the settings tuned for a few hundred steps);
# every other METHOD.md number must stay. A new deviation has to be listed here on purpose.
TINY_DEVIATIONS = {
    "generator": {
        "module.net.hidden_dim",
        "max_steps",
        "data.batch_size",
        "val_every",
        "data.num_segments",
    },
    "student": {
        "data.batch_size",
        "epochs_pseudo",
        "epochs_distill",
        "full_epochs",
        "module.optimizer.lr",
    },
    "ema": {"decay"},
}


def test_tiny_scale_deviations_are_the_listed_ones(hydra_context: None) -> None:
    tiny = resolved(compose_config("scale=tiny"))
    groups = {
        "generator": METHOD_GENERATOR,
        "student": METHOD_STUDENT,
        "filter": METHOD_FILTER,
        "ema": METHOD_EMA,
    }
    for group, spec in groups.items():
        allowed = TINY_DEVIATIONS.get(group, set())
        kept = {
            k: v for k, v in spec.items() if k not in allowed and not k.startswith("module.net.")
        }
        assert_matches(tiny[group], kept, f"{group} (scale=tiny)")
    paper = resolved(compose_config("scale=paper"))
    for group, allowed in TINY_DEVIATIONS.items():
        changed = {k for k in allowed if get(tiny[group], k) != get(paper[group], k)}
        assert changed, f"{group}: listed deviations {allowed} but none is changed by scale=tiny"


# ---------------------------------------------------------------- python -m fustal.train


def forked_train(
    forked: Forkserver, tmp_path: Path, *overrides: str
) -> subprocess.CompletedProcess:
    """``python -m fustal.train`` started in ``tmp_path`` with its run and log dirs there."""
    run_dirs = [f"hydra.run.dir={tmp_path / 'run'}", f"paths.log_dir={tmp_path / 'logs'}"]
    return forked("train", *run_dirs, *overrides, cwd=tmp_path, timeout=120)


def table_rows(text: str) -> dict[str, list[list[str]]]:
    """Rows of the rich summary tables, by subset name: ``[videos, instances, ...]`` each."""
    rows: dict[str, list[list[str]]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) == 9 and cells[1].isdigit():
            rows.setdefault(cells[0], []).append(cells[1:])
    return rows


def test_train_stage_data_generates_and_summarizes(tmp_path: Path, forked: Forkserver) -> None:
    proc = forked_train(
        forked,
        tmp_path,
        "stage=data",
        f"paths.data_dir={tmp_path / 'data'}",
        "dataset.synthetic.num_classes=3",
        "dataset.synthetic.train_videos=5",
        "dataset.synthetic.test_videos=3",
        "dataset.synthetic.min_duration=20",
        "dataset.synthetic.max_duration=30",
        "dataset.synthetic.feature_dim=8",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    markers = list((tmp_path / "data" / "synthetic").glob("*/synthetic.json"))
    assert len(markers) == 1
    rows = table_rows(proc.stdout)
    # generator view (train/test) and student view (validation/test)
    assert [r[0] for r in rows["train"]] == ["5"]
    assert [r[0] for r in rows["validation"]] == ["5"]
    assert [r[0] for r in rows["test"]] == ["3", "3"]
    for subset_rows in rows.values():
        for row in subset_rows:
            assert row[2] == "3/3" and row[6] == "8"  # classes present, feature dim
    assert "classes (3): Class00, Class01, Class02" in proc.stdout


def test_train_unknown_stage(tmp_path: Path, forked: Forkserver) -> None:
    proc = forked_train(forked, tmp_path, "stage=nope")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "stage" in lines[0] and "nope" in lines[0]


def test_train_missing_dataset_root(tmp_path: Path, forked: Forkserver) -> None:
    proc = forked_train(forked, tmp_path, "dataset.root=/nonexistent")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "/nonexistent" in lines[0]


@pytest.mark.parametrize(
    ("launcher", "target"),
    [
        ("joblib", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
        ("submitit_slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
        ("submitit_local", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"),
    ],
)
def test_sweep_launchers_compose(hydra_context: None, launcher: str, target: str) -> None:
    cfg = compose(
        "train",
        overrides=[f"hydra/launcher={launcher}", "paths.output_dir=/tmp/unused"],
        return_hydra_config=True,
    )
    assert cfg.hydra.launcher._target_ == target
    assert cfg.hydra.callbacks.sweep_summary._target_ == "fustal.summarize.SweepSummaryCallback"


# ---------------------------------------------------------------- schema and trainer checks


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+generator.max_step=10", "generator.max_step: unknown key, nothing reads it"),
        ("+student.module.net.not_a_key=1", "student.module.net.not_a_key: unknown key"),
        ("+student.module.inference.sigma_typo=0.5", "inference.sigma_typo: unknown key"),
        ("generator.max_steps=many", "generator.max_steps: Value 'many'"),
        ("student.epochs_pseudo=1.5", "student.epochs_pseudo: Value '1.5'"),
        ("stage=nope", "stage: expected one of data, generator, filter, student, all"),
        ("cache=maybe", "cache: expected one of true, false, refresh"),
        ("plot_videos=20", "plot_videos: expected an integer in [0, 8]"),
        ("student.data.ignore_score=1.5", "student.data.ignore_score: expected null or a score"),
        ("+trainer.max_epochs=5", "trainer.max_epochs: set per stage by fustal; use student"),
        ("+trainer.max_steps=5", "trainer.max_steps: set per stage by fustal; use generator"),
        ("+trainer.no_such_argument=1", "trainer.no_such_argument: not an argument of"),
    ],
)
def test_config_errors_are_one_line(hydra_context: None, override: str, message: str) -> None:
    from fustal.config.checks import check_config
    from fustal.errors import FustalError

    cfg = compose_config(override)
    with pytest.raises(FustalError) as err:
        check_config(cfg)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_composed_config_and_every_experiment_pass_the_schema(hydra_context: None) -> None:
    """(Every group option: test_every_group_option_composes.)"""
    from fustal.config.checks import check_config

    check_config(compose_config())
    experiments = {p.stem for p in (fustal.config.CONFIG_DIR / "experiment").glob("*.yaml")}
    for experiment in sorted(experiments - {"custom"}):
        check_config(compose_config(f"+experiment={experiment}"))


def test_any_trainer_argument_reaches_the_trainer(hydra_context: None, tmp_path: Path) -> None:
    from fustal.training.trainer import make_trainer

    cfg = compose_config(
        "debug=default",
        "trainer.precision=bf16-mixed",
        "+trainer.accumulate_grad_batches=2",
        "+trainer.limit_val_batches=0.5",
        "+trainer.profiler=simple",
        f"paths.output_dir={tmp_path}",
    )
    checkpoint = {"dirpath": str(tmp_path), "every_n_epochs": 1}
    trainer = make_trainer(cfg, "student", checkpoint, max_epochs=3)
    assert trainer.precision == "bf16-mixed" and trainer.accumulate_grad_batches == 2
    assert trainer.limit_val_batches == 0.5 and trainer.max_epochs == 3
    assert type(trainer.profiler).__name__ == "SimpleProfiler"
    assert trainer.checkpoint_callback is not None
    assert trainer.checkpoint_callback.dirpath == str(tmp_path)


@pytest.mark.parametrize(
    "entry",
    [
        "{_target_:builtins.dict}",
        "{_target_:pytorch_lightning.callbacks.LearningRateMonitor,_partial_:true}",
    ],
)
def test_a_callbacks_entry_that_is_no_callback_is_a_one_line_error(
    hydra_context: None, entry: str
) -> None:
    from fustal.errors import FustalError
    from fustal.training.trainer import make_callbacks

    cfg = compose_config(f"+callbacks.odd={entry}")
    with pytest.raises(FustalError, match=r"^callbacks\.odd: neither a Callback") as err:
        make_callbacks(cfg, {"dirpath": "/tmp/out"}, has_logger=False)
    assert "\n" not in str(err.value)


def test_train_refuses_an_unknown_key_in_one_line(tmp_path: Path, forked: Forkserver) -> None:
    proc = forked_train(forked, tmp_path, "+generator.max_step=10")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: generator.max_step: unknown key")
