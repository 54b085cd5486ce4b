"""LightningModule for stage 1: trains the cross-video contrastive generator."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from fustal.generator.losses import action_loss, contrast_matrix, cross_video_contrast
from fustal.generator.mining import mine_snippets
from fustal.generator.network import GeneratorNet, GeneratorOutput

LOG_PREFIX = "generator/train/"


class GeneratorModule(pl.LightningModule):
    """Stage-1 generator: :class:`GeneratorNet` trained with the action loss plus snippet and
    (optionally) cross-video contrast; ``cross_video=False`` is plain CoLA.

    ``classes`` (names in index order), ``feature_timing`` (see
    :func:`fustal.inference.feature_timing`), ``num_segments`` (inference sampling length) and
    ``proposals`` (the ``generator.proposals`` config) are metadata only: saved with the
    hyperparameters, they let ``python -m fustal.predict`` use a checkpoint on its own.
    """

    def __init__(
        self,
        feature_dim: int,
        num_classes: int,
        hidden_dim: int = 2048,
        dropout: float = 0.7,
        r_easy: int = 5,
        r_hard: int = 20,
        m: int = 3,
        M: int = 6,
        mining_dropout: float = 0.6,
        temperature: float = 0.07,
        contrast_weight: float = 0.01,
        cross_video_weight: float = 0.2,
        cross_video: bool = True,
        lr: float = 1e-4,
        betas: tuple = (0.9, 0.999),
        weight_decay: float = 5e-4,
        classes: Sequence[str] | None = None,
        feature_timing: Mapping[str, Any] | None = None,
        num_segments: int | None = None,
        proposals: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = GeneratorNet(feature_dim, num_classes, hidden_dim, dropout, r_easy)

    def forward(self, features: Tensor, valid: Tensor | None = None) -> GeneratorOutput:
        """features ``[B, N, D]`` (``valid [B]``: unpadded steps) -> :class:`GeneratorOutput`."""
        return self.net(features, valid)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        """Total loss ``action + contrast_weight * (snippet_contrast + cross_video)``. The data
        layer guarantees a positive class per video; the step has no host synchronisation and
        its losses run in float32 with autocast off."""
        hp = self.hparams
        labels = batch["labels"].float()
        out = self(batch["features"])
        with torch.autocast(self.device.type, enabled=False):
            snippets = mine_snippets(
                out.emb.float(),
                out.actionness.float(),
                hp.r_easy,
                hp.r_hard,
                hp.m,
                hp.M,
                hp.mining_dropout,
            )
            action = action_loss(out.video_scores, labels)
            terms = contrast_matrix(snippets, hp.temperature)
            contrast = torch.diagonal(terms).mean()
            if hp.cross_video:
                cross, pairs = cross_video_contrast(terms, labels, hp.cross_video_weight)
            else:
                cross, pairs = contrast.new_zeros(()), contrast.new_zeros(())
            loss = action + hp.contrast_weight * (contrast + cross)

        logs = {
            "loss": loss,
            "action": action,
            "snippet_contrast": contrast,
            "cross_video": cross,
            "num_pairs": pairs,
        }
        batch_size = labels.shape[0]
        for name, value in logs.items():
            self.log(LOG_PREFIX + name, value, batch_size=batch_size, prog_bar=name == "loss")
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam with the configured lr, betas and weight decay."""
        hp = self.hparams
        return torch.optim.Adam(
            self.parameters(),
            lr=hp.lr,
            betas=tuple(float(b) for b in hp.betas),
            weight_decay=hp.weight_decay,
        )
