"""Learning tests: real Lightning training on a small synthetic dataset must beat what the
untrained models achieve on the same test videos."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from fustal.config import CONFIG_DIR
from fustal.data.dataset import load_stage_data
from fustal.data.generator_datamodule import GeneratorDataModule
from fustal.data.student_datamodule import PseudoLabelDataModule
from fustal.data.synthetic import SyntheticConfig, ensure_synthetic
from fustal.generator.module import GeneratorModule
from fustal.metrics.results import proposals_to_results
from fustal.pipeline.generator_stage import evaluate_generator, generator_proposals, proposal_params
from fustal.pipeline.student_stage import evaluate_results, student_detections
from fustal.student.module import StudentModule

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


def test_generator_learns_to_localize(root: Path) -> None:
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
    trainer(max_steps=200).fit(module, datamodule=dm)
    after = evaluate()
    assert after > before + 0.15, (before, after)
    assert after > 0.25
    pseudo = generator_proposals(module, dm.predict_loader("train"), params)
    assert set(pseudo) == {v.id for v in dm.train_videos}


def student_map(module: StudentModule, dm: PseudoLabelDataModule, data, use_ema: bool) -> float:
    module.eval()
    dets = student_detections(module, dm.predict_loader("test"), use_ema)
    return evaluate_results(proposals_to_results(dets, data.classes), data, TIOU)["mAP@0.5"]


@pytest.mark.slow
@pytest.mark.parametrize("epochs", [12])
def test_student_learns_from_ground_truth(root: Path, epochs: int) -> None:
    torch.manual_seed(0)
    data = stage(root, "i3d_overlap")
    model = {
        "embd_dim": 32,
        "fpn_dim": 32,
        "head_dim": 32,
        "sgp_mlp_dim": 64,
        "arch": [2, 2, 3],
        "max_seq_len": 384,
        "regression_ranges": [[0, 4], [4, 8], [8, 16], [16, 10000]],
    }
    dm = PseudoLabelDataModule(data, None, 384, 8, batch_size=4, eval_batch_size=4)
    module = StudentModule(
        feature_dim=32,
        num_classes=3,
        model=model,
        lr=1e-3,
        max_epochs=epochs,
        epochs_pseudo=epochs,
        ema_decay=None,
    )
    before = student_map(module, dm, data, use_ema=False)
    trainer(max_epochs=epochs, gradient_clip_val=1.0).fit(module, datamodule=dm)
    after = student_map(module, dm, data, use_ema=False)
    assert after > before + 0.3, (before, after)
    assert after > 0.35
