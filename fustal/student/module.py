"""LightningModule for stage 3: the TriDet student with EMA teacher and EMA distillation."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from fustal.errors import FustalError
from fustal.student.decode import decode_video
from fustal.student.losses import detection_losses, update_loss_normalizer, video_level_loss
from fustal.student.model import TriDet

LOG_PREFIX = "student/train/"
SCHEDULES = ("constant", "cosine")


def _plain_kwargs(value: Mapping | DictConfig | None, fn: Callable, what: str) -> dict:
    """A plain dict of keyword arguments for ``fn``; keys that are not among its defaulted
    parameters raise :class:`FustalError`."""
    if isinstance(value, DictConfig):
        value = OmegaConf.to_container(value, resolve=True)
    kwargs = dict(value or {})
    params = inspect.signature(fn).parameters.values()
    accepted = {p.name for p in params if p.default is not inspect.Parameter.empty}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise FustalError(f"{what}: unknown keys {unknown}")
    return kwargs


def weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: decay on Conv/Linear weights only (not biases, norms, scales)."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            is_weight = name == "weight" and isinstance(module, nn.Conv1d | nn.Linear)
            (decay if is_weight else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Learning-rate multiplier: linear warmup over ``warmup_steps`` optimizer steps, then
    constant or cosine decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class StudentModule(pl.LightningModule):
    """TriDet student trained on (pseudo) segments plus FuSTAL's video-level loss.

    Before ``epochs_pseudo`` it learns from ``batch["segments"] / batch["labels"]``; from then
    on (when ``ema_decay`` is set) from its EMA teacher's predictions on the same clip.
    ``model`` holds :class:`TriDet` keyword arguments, ``inference`` those of
    :func:`fustal.student.decode.decode_video`. The EMA copy (updated after every optimizer
    step) and the loss normalizer are part of the state dict, hence of checkpoints.
    ``classes`` (names in index order) and ``feature_timing`` (see
    :func:`fustal.inference.feature_timing`) are metadata only: saved with the hyperparameters,
    they let ``python -m fustal.predict`` turn detections into labelled seconds.
    """

    def __init__(
        self,
        feature_dim: int,
        num_classes: int,
        model: Mapping | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.05,
        warmup_epochs: float = 1,
        schedule: str = "constant",
        max_epochs: int = 100,
        epochs_pseudo: int = 60,
        ema_decay: float | None = 0.999,
        teacher_score_thresh: float = 0.4,
        video_loss_weight: float = 1.0,
        video_topk_divisor: int = 5,
        init_loss_norm: float = 100.0,
        loss_norm_momentum: float = 0.9,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        iou_weight_power: float = 0.2,
        inference: Mapping | None = None,
        predict_with_ema: bool = True,
        classes: Sequence[str] | None = None,
        feature_timing: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        if schedule not in SCHEDULES:
            raise FustalError(f"schedule: expected one of {SCHEDULES}, got {schedule!r}")
        if ema_decay is not None and not 0.0 <= ema_decay <= 1.0:
            raise FustalError(f"ema_decay: must lie in [0, 1] or be null, got {ema_decay}")
        self.model_kwargs = _plain_kwargs(model, TriDet, "student.model")
        self.decode_kwargs = _plain_kwargs(inference, decode_video, "student.inference")
        self.model = TriDet(feature_dim, num_classes, **self.model_kwargs)
        self.ema: AveragedModel | None = None
        if ema_decay is not None:
            self.ema = AveragedModel(
                self.model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True
            )
            self.ema.requires_grad_(False)
        self.register_buffer("loss_normalizer", torch.tensor(float(init_loss_norm)))

    def distilling(self) -> bool:
        """Whether the current epoch learns from the EMA teacher."""
        return self.ema is not None and self.current_epoch >= self.hparams.epochs_pseudo

    def targets_for(self, batch: dict) -> tuple[list[Tensor], list[Tensor]]:
        """Segments ``[M_i, 2]`` (grid units) and labels ``[M_i]`` each video trains on now.

        While distilling: the EMA teacher's detections on the batch's clip with score above
        ``teacher_score_thresh`` (or the single best one), start/end clamped at 0.
        """
        if not self.distilling():
            return list(batch["segments"]), list(batch["labels"])
        segments, labels = [], []
        for det in self.predict_batch(batch, use_ema=True):
            keep = det[:, 1] > self.hparams.teacher_score_thresh
            if len(det) and not keep.any():
                keep[np.argmax(det[:, 1])] = True
            segs = torch.as_tensor(det[keep, 2:4], dtype=torch.float32, device=self.device)
            segments.append(segs.clamp(min=0.0))
            labels.append(torch.as_tensor(det[keep, 0], device=self.device).long())
        return segments, labels

    @torch.no_grad()
    def predict_batch(self, batch: dict, use_ema: bool = False) -> list[np.ndarray]:
        """Detections per video: ``[K, 4]`` rows ``(class_index, score, start, end)`` in grid
        units, from the student or (``use_ema``) its EMA copy, in eval mode."""
        if use_ema and self.ema is None:
            raise FustalError("student: use_ema needs ema_decay to be set")
        net = self.ema.module if use_ema else self.model
        was_training = net.training
        net.eval()
        try:
            output = net(batch["features"], batch["mask"])
            return net.detect(output, **self.decode_kwargs)
        finally:
            net.train(was_training)

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, Any]:
        """``{"video_id": [...], "detections": [[K, 4], ...]}`` (EMA model if enabled and
        ``predict_with_ema``)."""
        use_ema = self.hparams.predict_with_ema and self.ema is not None
        return {
            "video_id": list(batch["video_id"]),
            "detections": self.predict_batch(batch, use_ema),
        }

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        """Focal + DIoU (over the running normalizer) + weighted video-level loss."""
        segments, labels = self.targets_for(batch)
        output = self.model(batch["features"], batch["mask"])
        cls_targets, reg_targets = self.model.targets(output, segments, labels)
        valid = torch.cat(output.masks, dim=1)
        num_pos = int(((cls_targets.sum(-1) > 0) & valid).sum())
        norm = update_loss_normalizer(
            float(self.loss_normalizer), num_pos, self.hparams.loss_norm_momentum
        )
        self.loss_normalizer.fill_(norm)
        losses = detection_losses(
            output.cls_logits,
            output.start_logits,
            output.end_logits,
            output.offsets,
            output.masks,
            cls_targets,
            reg_targets,
            norm,
            self.model.num_bins,
            self.hparams.focal_alpha,
            self.hparams.focal_gamma,
            self.hparams.iou_weight_power,
        )
        video = video_level_loss(
            output.video_logits,
            batch["mask"],
            batch["video_labels"],
            self.hparams.video_topk_divisor,
        )
        loss = losses["cls"] + losses["reg"] + self.hparams.video_loss_weight * video
        logs = {"loss": loss, **losses, "video": video, "num_pos": float(num_pos), "norm": norm}
        self.log_dict(
            {LOG_PREFIX + k: v for k, v in logs.items()},
            batch_size=batch["features"].shape[0],
            prog_bar=False,
        )
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """Step the optimizer, then update the EMA copy."""
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW (decay on Conv/Linear weights) with per-step warmup + constant/cosine."""
        hp = self.hparams
        optimizer = torch.optim.AdamW(weight_decay_groups(self.model, hp.weight_decay), lr=hp.lr)
        stepping = self.trainer.estimated_stepping_batches  # also sets num_training_batches
        batches = self.trainer.num_training_batches
        if math.isfinite(batches):
            steps_per_epoch = max(1, math.ceil(batches / self.trainer.accumulate_grad_batches))
        else:
            # Trainer(max_steps=N) without max_epochs: Lightning does not load the data to count
            # batches, so spread the step budget over this module's epochs
            steps_per_epoch = max(1, math.ceil(stepping / hp.max_epochs))
        warmup = round(hp.warmup_epochs * steps_per_epoch)
        total = min(hp.max_epochs * steps_per_epoch, stepping)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, warmup, total, hp.schedule)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
