"""LightningModule for stage 1: trains the cross-video contrastive generator and turns its CAS
into proposals (validation, test, prediction)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from torch import Tensor

from fustal.errors import FustalError
from fustal.generator.losses import action_loss, contrast_matrix, cross_video_contrast
from fustal.generator.mining import mine_snippets
from fustal.generator.network import GeneratorNet, GeneratorOutput
from fustal.metrics.detection import THUMOS_TIOU
from fustal.pseudo.parallel import ProposalPool, resolve_workers
from fustal.pseudo.proposals import proposal_kwargs
from fustal.training.evaluated_module import EvaluatedModule

LOG_PREFIX = "generator/train/"
# predict_step's key of the video-level class scores
VIDEO_SCORES = "video_scores"
DEFAULT_OPTIMIZER = {
    "_target_": "torch.optim.Adam",
    "_partial_": True,
    "lr": 1e-4,
    "betas": [0.9, 0.999],
    "weight_decay": 5e-4,
}


def class_scaled_decay(weight_decay: float, weight_decay_classes: int, num_classes: int) -> float:
    """``weight_decay`` meant for ``weight_decay_classes`` classes, for ``num_classes``:
    ``weight_decay * (weight_decay_classes / num_classes) ** 2``.

    The action loss averages over the classes and a class is in about one video of ``C``, so the
    data gradient on a class's classifier weights falls as ``1 / C**2`` while Adam's L2 term does
    not: at a fixed decay a generator with many classes has its classifier decayed to zero before
    it learns (docs/results.md, "The generator's weight decay").
    """
    return weight_decay * (weight_decay_classes / num_classes) ** 2


class GeneratorModule(EvaluatedModule):
    """Stage-1 generator: a network (``net``: a ``_target_`` config, default
    :class:`GeneratorNet`) trained with the action loss plus snippet and (optionally) cross-video
    contrast; ``cross_video=False`` is plain CoLA. ``optimizer`` is a partial ``_target_``
    config called with the parameters (default: METHOD.md's Adam); with ``weight_decay_classes``
    its ``weight_decay`` is the value for that many classes, scaled to ``num_classes``
    (:func:`class_scaled_decay`; None: as given).

    Evaluation (``validation_step``/``test_step`` and ``predict_step``) turns the CAS of each
    video into proposals with ``proposals`` (the keywords of
    :func:`~fustal.pseudo.proposals.cas_to_proposals`) in ``proposal_workers`` processes. The
    validation loop scores what ``validation`` says (:class:`~fustal.training.evaluated_module.
    EvaluatedModule`): the test videos as the research code does (``generator/test/*``), or the
    held-out training videos (``generator/val/*``; video-level mAP of the video scores).
    ``classes``, ``feature_timing`` and ``num_segments`` are metadata saved with the
    hyperparameters, so that ``python -m fustal.predict`` can use a checkpoint on its own.
    """

    def __init__(
        self,
        feature_dim: int,
        num_classes: int,
        net: Mapping[str, Any] | None = None,
        r_easy: int = 5,
        r_hard: int = 20,
        m: int = 3,
        M: int = 6,
        mining_dropout: float = 0.6,
        temperature: float = 0.07,
        contrast_weight: float = 0.01,
        cross_video: bool = True,
        cross_video_weight: float = 0.2,
        optimizer: Mapping[str, Any] | None = None,
        weight_decay_classes: int | None = None,
        proposals: Mapping[str, Any] | None = None,
        proposal_workers: int | str = "auto",
        tiou_thresholds: Sequence[float] = THUMOS_TIOU,
        classes: Sequence[str] | None = None,
        feature_timing: Mapping[str, Any] | None = None,
        num_segments: int | None = None,
        validation: str = "test",
    ) -> None:
        super().__init__()
        if weight_decay_classes is not None and weight_decay_classes < 1:
            raise FustalError(
                f"generator.module.weight_decay_classes: must be at least 1 or null, got"
                f" {weight_decay_classes}"
            )
        self.save_hyperparameters()
        net_cfg = {"_target_": "fustal.generator.network.GeneratorNet", **(net or {})}
        self.net: GeneratorNet = instantiate(
            net_cfg, feature_dim=feature_dim, num_classes=num_classes, r_easy=r_easy
        )
        self.proposal_params = proposal_kwargs(proposals or {})
        self.setup_evaluation(num_classes, tiou_thresholds, ["generator"], validation)
        self.pool: ProposalPool | None = None

    def forward(self, features: Tensor, valid: Tensor | None = None) -> GeneratorOutput:
        """features ``[B, N, D]`` (``valid [B]``: unpadded steps) -> :class:`GeneratorOutput`."""
        return self.net(features, valid)

    # ---------------------------------------------------------------- training
    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        """Total loss ``action + contrast_weight * (snippet_contrast + cross_video)``. The data
        layer guarantees a positive class per video; the step has no host synchronisation and
        its losses run in float32 with autocast off."""
        hp = self.hp
        labels = batch["labels"].float()
        out = self(batch["features"])
        with torch.autocast(self.device.type, enabled=False):
            emb, actionness = out.emb.float(), out.actionness.float()
            snippets = mine_snippets(
                emb, actionness, hp.r_easy, hp.r_hard, hp.m, hp.M, hp.mining_dropout
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

    @property
    def optimizer_config(self) -> dict[str, Any]:
        """The ``optimizer`` partial config, its ``weight_decay`` scaled to the class count when
        ``weight_decay_classes`` is set."""
        cfg = dict(self.hp.optimizer or DEFAULT_OPTIMIZER)
        classes = self.hp.weight_decay_classes
        if classes is not None and "weight_decay" in cfg:
            decay = float(cfg["weight_decay"])
            cfg["weight_decay"] = class_scaled_decay(decay, classes, self.hp.num_classes)
        return cfg

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """The :attr:`optimizer_config` partial called with every parameter."""
        return instantiate(self.optimizer_config)(self.parameters())

    # ---------------------------------------------------------------- inference
    @torch.no_grad()
    def cas(self, batch: dict) -> list[dict[str, Any]]:
        """Per video of ``batch`` (padding removed, on the CPU): ``cas [T, C]``,
        ``actionness [T]``, ``video_scores [C]`` and ``seconds_per_step``."""
        valid = batch["valid"]
        pred = self(batch["features"], valid=valid)
        cas, act, scores = (x.float().cpu() for x in (pred.cas, pred.actionness, pred.video_scores))
        return [
            {
                "cas": cas[i, :n].numpy(),
                "actionness": act[i, :n].numpy(),
                "video_scores": scores[i].numpy(),
                "seconds_per_step": float(batch["seconds_per_step"][i]),
            }
            for i, n in enumerate(valid.tolist())
        ]

    def proposals(self, outputs: list[dict[str, Any]]) -> list[np.ndarray]:
        """Proposals ``[K, 4]`` ``(class, score, start_s, end_s)`` of each video's :meth:`cas`
        output (METHOD.md section 3), computed in the proposal worker processes."""
        items = [
            (o["cas"], o["actionness"], o["video_scores"], o["seconds_per_step"]) for o in outputs
        ]
        return self._pool(len(items)).map(items)

    def _pool(self, num_videos: int) -> ProposalPool:
        """The proposal pool, started at first use (kept until :meth:`teardown`)."""
        if self.pool is None:
            loaders = self._loaders()
            videos = sum(len(getattr(d, "dataset", ())) for d in loaders) or num_videos
            workers = resolve_workers(self.hp.proposal_workers, videos)
            self.pool = ProposalPool(self.proposal_params, workers)
        return self.pool

    def _loaders(self) -> list[Any]:
        """The dataloaders of the running evaluation or prediction (empty outside a Trainer)."""
        try:
            trainer = self.trainer
        except RuntimeError:  # not attached to a Trainer
            return []
        fn = trainer.state.fn
        loaders = {
            "validate": trainer.val_dataloaders,
            "fit": trainer.val_dataloaders,
            "test": trainer.test_dataloaders,
            "predict": trainer.predict_dataloaders,
        }.get(str(fn.value) if fn else "")
        if loaders is None:
            return []
        return list(loaders) if isinstance(loaders, list | tuple) else [loaders]

    def teardown(self, stage: str) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def evaluated_detections(self, batch: dict) -> dict[str, list[np.ndarray]]:
        """What the evaluation's detection mAP scores: the proposals."""
        return {"generator": self.proposals(self.cas(batch))}

    def evaluated_video_scores(
        self, batch: dict, detections: dict[str, list[np.ndarray]] | None
    ) -> dict[str, list[np.ndarray]]:
        """What the held-out video-level mAP scores: the video scores (softmax over classes)."""
        return {"generator": [o["video_scores"] for o in self.cas(batch)]}

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, list]:
        """``{"video_id": [...], "generator": [[K, 4], ...], "video_scores": [[C], ...]}``:
        proposals in seconds and the video-level class scores (softmax over classes), the
        classifier that :mod:`fustal.fusion` fuses into a student's detections."""
        outputs = self.cas(batch)
        return {
            "video_id": list(batch["video_id"]),
            "generator": self.proposals(outputs),
            VIDEO_SCORES: [o["video_scores"].astype(np.float64) for o in outputs],
        }
