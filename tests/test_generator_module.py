"""GeneratorModule: loss composition, gradients, optimizer and a real Lightning fit."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from fustal.errors import FustalError
from fustal.generator.losses import (
    action_loss,
    contrast_matrix,
    cross_video_contrast,
)
from fustal.generator.mining import mine_snippets
from fustal.generator.module import GeneratorModule
from tests.conftest import NoHostSync

FEATURE_DIM, NUM_CLASSES, NUM_STEPS = 8, 3, 24
ADAM_1E2 = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-2}


class TinyVideos(Dataset):
    """Random videos whose single class adds a class direction to a random block of steps."""

    def __init__(self, num_videos: int = 12, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        directions = torch.randn(NUM_CLASSES, FEATURE_DIM, generator=g) * 2
        self.items = []
        for index in range(num_videos):
            cls = index % NUM_CLASSES
            features = torch.randn(NUM_STEPS, FEATURE_DIM, generator=g) * 0.5
            start = int(torch.randint(0, NUM_STEPS - 8, (1,), generator=g))
            features[start : start + 8] += directions[cls]
            labels = torch.zeros(NUM_CLASSES)
            labels[cls] = 1.0
            self.items.append(
                {
                    "features": features,
                    "labels": labels,
                    "length": torch.tensor(NUM_STEPS),
                    "video_id": f"video_{index:02d}",
                }
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]


def _batch(num_videos: int = 6, seed: int = 0) -> dict:
    return next(iter(DataLoader(TinyVideos(num_videos, seed), batch_size=num_videos)))


def _module(dropout: float = 0.7, **kwargs) -> GeneratorModule:
    torch.manual_seed(0)
    net = {"hidden_dim": 16, "dropout": dropout}
    return GeneratorModule(FEATURE_DIM, NUM_CLASSES, net=net, **kwargs)


def test_hparams_and_optimizer() -> None:
    optimizer = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 3e-3}
    module = _module(optimizer={**optimizer, "betas": [0.8, 0.99], "weight_decay": 1e-3})
    assert module.hparams.contrast_weight == 0.01 and module.hparams.M == 6
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam)
    group = optimizer.param_groups[0]
    assert group["lr"] == 3e-3 and group["betas"] == (0.8, 0.99)
    assert group["weight_decay"] == 1e-3


def test_weight_decay_scaled_to_the_class_count() -> None:
    optimizer = {**ADAM_1E2, "weight_decay": 1e-3}

    def decay(**kwargs) -> float:
        module = _module(optimizer=optimizer, **kwargs)
        return module.configure_optimizers().param_groups[0]["weight_decay"]

    # meant for 6 classes, used with 3: (6 / 3)^2 times the decay; for 3 classes: as given
    assert decay(weight_decay_classes=6) == pytest.approx(4e-3)
    assert decay(weight_decay_classes=3) == decay() == 1e-3
    with pytest.raises(FustalError, match="generator.module.weight_decay_classes: must be"):
        _module(weight_decay_classes=0)


@pytest.mark.parametrize("cross_video", [True, False])
def test_training_step_composes_losses(cross_video: bool) -> None:
    module = _module(dropout=0.0, mining_dropout=0.0, cross_video=cross_video)
    batch = _batch()
    loss = module.training_step(batch, 0)
    out = module(batch["features"])
    s = mine_snippets(out.emb, out.actionness, drop_p=0.0)
    terms = contrast_matrix(s)
    cross, pairs = cross_video_contrast(terms, batch["labels"])
    assert pairs.item() == 3  # six videos, three classes: two videos per class
    cross = cross if cross_video else torch.tensor(0.0)
    expected = action_loss(out.video_scores, batch["labels"]) + 0.01 * (
        torch.diagonal(terms).mean() + cross
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert cross.item() > 0 or not cross_video


def test_gradient_reaches_every_parameter() -> None:
    module = _module()
    module.train()
    module.training_step(_batch(), 0).backward()
    for name, param in module.named_parameters():
        assert param.grad is not None, name
        assert param.grad.abs().sum() > 0, name


class LossRecorder(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def test_lightning_fit_reduces_loss() -> None:
    pl.seed_everything(0, workers=True)
    module = GeneratorModule(FEATURE_DIM, NUM_CLASSES, net={"hidden_dim": 32}, optimizer=ADAM_1E2)
    recorder = LossRecorder()
    trainer = pl.Trainer(
        max_steps=60,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
    )
    loader = DataLoader(TinyVideos(12), batch_size=6, shuffle=True)
    trainer.fit(module, loader)
    assert len(recorder.losses) == 60
    first = sum(recorder.losses[:10]) / 10
    last = sum(recorder.losses[-10:]) / 10
    assert last < 0.8 * first
    logged = trainer.callback_metrics
    for name in ("loss", "action", "snippet_contrast", "cross_video", "num_pairs"):
        assert f"generator/train/{name}" in logged


class SyncFreeGenerator(GeneratorModule):
    def training_step(self, batch, batch_idx):
        with NoHostSync():
            return super().training_step(batch, batch_idx)


def test_training_step_has_no_host_sync() -> None:
    pl.seed_everything(0, workers=True)
    module = SyncFreeGenerator(FEATURE_DIM, NUM_CLASSES, net={"hidden_dim": 32}, optimizer=ADAM_1E2)
    recorder = LossRecorder()
    trainer = pl.Trainer(
        max_steps=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
    )
    trainer.fit(module, DataLoader(TinyVideos(12), batch_size=6))
    assert len(recorder.losses) == 3
