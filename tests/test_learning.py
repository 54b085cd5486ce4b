"""Learning tests: real Lightning training on synthetic data must beat what the untrained
generator achieves, and the student trained on pseudo labels must beat the generator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from fustal.config import CONFIG_DIR
from fustal.data.dataset import load_stage_data
from fustal.data.generator_datamodule import GeneratorDataModule
from fustal.data.synthetic import SyntheticConfig, ensure_synthetic
from fustal.generator.module import GeneratorModule
from fustal.pipeline.generator_stage import evaluate_generator, generator_proposals, proposal_params
from tests.conftest import run_fustal

TIOU = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = SyntheticConfig(
        num_classes=3,
        train_videos=24,
        test_videos=10,
        min_duration=30,
        max_duration=50,
        feature_dim=32,
        seed=3,
    )
    return ensure_synthetic(cfg, tmp_path_factory.mktemp("learning"))


def stage(root: Path, layout: str):
    features = OmegaConf.load(CONFIG_DIR / "features" / f"{layout}.yaml")
    return load_stage_data({"root": str(root)}, features)


def trainer(**kwargs) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        **kwargs,
    )


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_generator_learns_to_localize(root: Path, precision: str) -> None:
    """Also under bf16 mixed precision (the losses and proposals stay float32)."""
    torch.manual_seed(0)
    data = stage(root, "i3d_nonoverlap")
    dm = GeneratorDataModule(data, num_segments=64, batch_size=8, eval_batch_size=10)
    module = GeneratorModule(feature_dim=32, num_classes=3, hidden_dim=64, lr=1e-3)
    params = proposal_params(OmegaConf.load(CONFIG_DIR / "generator" / "cola_cv.yaml").proposals)

    def evaluate() -> float:
        module.eval()
        with torch.no_grad():
            return evaluate_generator(module, dm.val_dataloader(), dm.test_videos, 3, TIOU, params)[
                "mAP@0.5"
            ]

    before = evaluate()
    trainer(max_steps=200, precision=precision).fit(module, datamodule=dm)
    after = evaluate()
    assert after > before + 0.15, (before, after)
    assert after > 0.25
    pseudo = generator_proposals(module, dm.predict_loader("train"), params)
    assert set(pseudo) == {v.id for v in dm.train_videos}


def run_default_pipeline(tmp: Path, *overrides: str) -> dict:
    """``python -m fustal.train`` on the embedded synthetic default (what ``make demo`` runs);
    returns its ``metrics.json``."""
    proc = run_fustal(
        "train",
        f"paths.data_dir={tmp / 'data'}",
        f"paths.cache_dir={tmp / 'cache'}",
        f"hydra.run.dir={tmp / 'run'}",
        "trainer.enable_progress_bar=false",
        "logger=none",
        "plot_videos=0",
        *overrides,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads((tmp / "run" / "metrics.json").read_text())


def test_student_on_pseudo_labels_beats_the_generator(tmp_path: Path) -> None:
    """FuSTAL's claim at small scale: the student trained on the generator's filtered pseudo
    labels localizes the test videos better than the generator itself."""
    metrics = run_default_pipeline(tmp_path)
    generator = metrics["generator"]["test"]["avg"]
    student = metrics["student"]["test"]["avg"]
    student_ema = metrics["student_ema"]["test"]["avg"]
    assert generator > 0.2, metrics["generator"]
    assert student > generator, (generator, student)
    assert student_ema > generator + 0.02, (generator, student_ema)


@pytest.mark.slow
def test_student_learns_from_ground_truth(tmp_path: Path) -> None:
    """The fully supervised upper bound on the same data and code reaches a high mAP@0.5."""
    metrics = run_default_pipeline(tmp_path, "supervision=full")
    assert metrics["student"]["test"]["mAP@0.5"] > 0.5, metrics["student"]
