"""LightningModule for stage 3: the TriDet student with EMA teacher and EMA distillation."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch
from hydra.utils import instantiate
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor, nn

from fustal.config.schema import InferenceSchema
from fustal.data.features import Timing, detections_to_seconds
from fustal.errors import FustalError
from fustal.fusion import fuse, fusion_keywords
from fustal.metrics.detection import THUMOS_TIOU
from fustal.student.decode import SegmentBatch, teacher_targets
from fustal.student.ema import ModelEMA, decay_for_share, initial_share
from fustal.student.losses import detection_losses, update_loss_normalizer, video_level_loss
from fustal.student.model import TriDet
from fustal.training.evaluated_module import EvaluatedModule

log = logging.getLogger(__name__)

LOG_PREFIX = "student/train/"
DEFAULT_OPTIMIZER = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-4}
DEFAULT_SCHEDULER = {"_target_": "fustal.student.schedule.warmup_schedule", "_partial_": True}
# the teacher is "not ready" when it still holds more than this share of its random initial
# weights at the switch to distillation
TEACHER_INIT_SHARE_WARN = 0.05


def weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: decay on Conv/Linear weights only (not biases, norms, scales)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            is_weight = name == "weight" and isinstance(module, nn.Conv1d | nn.Linear)
            (decay if is_weight else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class StudentModule(EvaluatedModule):
    """TriDet student trained on (pseudo) segments plus FuSTAL's video-level loss.

    ``net`` is a ``_target_`` config of the network (default :class:`TriDet` with METHOD.md
    sizes), ``optimizer`` and ``scheduler`` partial ``_target_`` configs (AdamW with weight decay
    on conv/linear weights only; :func:`~fustal.student.schedule.warmup_schedule`), ``inference``
    the decoding settings (:class:`~fustal.config.schema.InferenceSchema` fields).

    Before ``epochs_pseudo`` it learns from the batch's padded targets (``segments [B, M, 2]``,
    ``labels [B, M]``, ``target_valid [B, M]``); from then on (when ``ema_decay`` is set) from
    its EMA teacher's predictions on the same clean clip. The EMA copy (updated after every
    optimizer step, :class:`~fustal.student.ema.ModelEMA`) and the loss normalizer are part of
    the state dict, hence of checkpoints. Evaluation (``validation_step``/``test_step``, scoring
    what ``validation`` says as :class:`~fustal.training.evaluated_module.EvaluatedModule` logs it;
    ``predict_step``) decodes detections in seconds for the raw weights and the EMA copy.
    ``classes`` and ``feature_timing`` are metadata saved with the hyperparameters for ``python
    -m fustal.predict``.

    ``class_agnostic``: the network predicts one class, actionness (every target, the EMA
    teacher's included, is class 0; the video-level loss, which needs classes, is off), and the
    classes come from ``fusion``. ``fusion`` (:func:`fustal.fusion.fusion_keywords`) fuses each
    evaluated video's detections with the video-level class scores its batch carries
    (``class_scores [B, C]``, e.g. the generator's) or, at ``level=detections``, with the
    generator's detections of the video (``class_detections``: per video ``[P, 4]``).
    """

    def __init__(
        self,
        feature_dim: int,
        num_classes: int,
        net: Mapping[str, Any] | None = None,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        max_epochs: int = 101,
        epochs_pseudo: int = 61,
        ema_decay: float | None = 0.999,
        ema_warmup: bool = False,
        teacher_score_thresh: float = 0.4,
        video_loss_weight: float = 1.0,
        video_topk_divisor: int = 5,
        init_loss_norm: float = 100.0,
        loss_norm_momentum: float = 0.9,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        iou_weight_power: float = 0.2,
        inference: Mapping[str, Any] | None = None,
        label_smoothing: float = 0.0,
        class_agnostic: bool = False,
        fusion: Mapping[str, Any] | None = None,
        tiou_thresholds: Sequence[float] = THUMOS_TIOU,
        classes: Sequence[str] | None = None,
        feature_timing: Mapping[str, Any] | None = None,
        validation: str = "test",
    ):
        super().__init__()
        self.save_hyperparameters()
        if ema_decay is not None and not 0.0 <= ema_decay <= 1.0:
            raise FustalError(f"ema_decay: must lie in [0, 1] or be null, got {ema_decay}")
        self.fusion = fusion_keywords(fusion)
        net_cfg = {"_target_": "fustal.student.model.TriDet", **(net or {})}
        self.model: TriDet = instantiate(
            net_cfg, feature_dim=feature_dim, num_classes=1 if class_agnostic else num_classes
        )
        self.decoding = InferenceSchema(**(inference or {}))
        self.ema = None if ema_decay is None else ModelEMA(self.model, ema_decay, ema_warmup)
        self.loss_normalizer: Tensor
        self.register_buffer("loss_normalizer", torch.tensor(float(init_loss_norm)))
        self.steps_per_epoch: int | None = None
        # whether the teacher's readiness was already warned about before training
        self.teacher_warned = False
        self.setup_evaluation(num_classes, tiou_thresholds, self.variants(), validation)

    def variants(self) -> list[str]:
        """The weights evaluated: ``student`` and, with an EMA copy, ``student_ema``."""
        return ["student", "student_ema"] if self.ema is not None else ["student"]

    def distilling(self) -> bool:
        """Whether the current epoch learns from the EMA teacher."""
        return self.ema is not None and self.current_epoch >= self.hp.epochs_pseudo

    def batch_targets(self, batch: dict) -> tuple[Tensor, Tensor, Tensor]:
        """Padded ``segments [B, M, 2]`` (grid units), ``labels [B, M]`` and ``valid [B, M]``
        that each video trains on now: the batch's own, or while distilling the EMA teacher's
        (:meth:`teacher_targets`)."""
        if not self.distilling():
            labels = batch["labels"]
            if self.hp.class_agnostic:
                labels = torch.zeros_like(labels)
            return batch["segments"], labels, batch["target_valid"]
        targets = self.teacher_targets(batch)
        return targets.segments, targets.labels, targets.valid

    @torch.no_grad()
    def teacher_targets(self, batch: dict) -> SegmentBatch:
        """The EMA teacher's targets on the batch's clean clip (eval mode): detections with
        score above ``teacher_score_thresh``, or each video's single best, start/end clamped at
        0 (:func:`fustal.student.decode.teacher_targets`, soft-NMS on the candidates above the
        threshold only)."""
        if self.ema is None:
            raise FustalError("student: a teacher needs ema_decay to be set")
        net = cast(TriDet, self.ema.module)
        if net.training:  # the teacher only ever predicts (see train())
            net.eval()
        thresh = self.hp.teacher_score_thresh
        cands = net.teacher_candidates(batch["features"], batch["mask"], thresh, self.decoding)
        return teacher_targets(cands, net.num_classes, thresh, self.decoding)

    def train(self, mode: bool = True) -> StudentModule:
        """Set the training mode; the EMA copy always stays in eval mode (it only predicts)."""
        super().train(mode)
        if self.ema is not None:
            self.ema.module.eval()
        return self

    @torch.no_grad()
    def detect(self, batch: dict, use_ema: bool = False) -> SegmentBatch:
        """Detections ``[B, K]`` (grid units, sorted by score) of the student or (``use_ema``)
        its EMA copy, in eval mode."""
        if use_ema and self.ema is None:
            raise FustalError("student: use_ema needs ema_decay to be set")
        net = cast(TriDet, self.ema.module) if use_ema and self.ema is not None else self.model
        was_training = net.training
        net.eval()
        try:
            return net.detect(net(batch["features"], batch["mask"]), self.decoding)
        finally:
            net.train(was_training)

    def predict_batch(self, batch: dict, use_ema: bool = False) -> list[np.ndarray]:
        """Detections per video: ``[K, 4]`` rows ``(class_index, score, start, end)`` on the
        feature grid of the batch's clips (see :meth:`detect`)."""
        return self.detect(batch, use_ema).to_rows()

    def detections_in_seconds(self, batch: dict, use_ema: bool) -> list[np.ndarray]:
        """Per video ``[K, 4]`` rows in seconds, clipped to the video (zero-length detections
        kept, as in the research evaluation), fused with the batch's ``class_scores`` when
        ``fusion`` is set."""
        if self.fusion is not None and "class_scores" not in batch:
            raise FustalError(
                f"student: fusion is on but the videos {list(batch['video_id'])[:3]} come without"
                " video-level class scores (give the DataModule video_scores)"
            )
        out = []
        for i, rows in enumerate(self.predict_batch(batch, use_ema)):
            timing = Timing(float(batch["stride_s"][i]), float(batch["window_s"][i]))
            duration = float(batch["duration"][i])
            rows = detections_to_seconds(
                rows, float(batch["offset"][i]), timing, None if math.isinf(duration) else duration
            )
            if self.fusion is not None:
                scores = batch["class_scores"][i].cpu().numpy()
                found = batch.get("class_detections")
                rows = fuse(
                    rows,
                    scores,
                    None if found is None else found[i],
                    self.fusion,
                    self.hp.class_agnostic,
                )
            out.append(rows)
        return out

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, list]:
        """``{"video_id": [...], "student": [[K, 4], ...], "student_ema": [...]}`` (detections
        in seconds; ``student_ema`` with an EMA copy)."""
        return {"video_id": list(batch["video_id"]), **self.evaluated_detections(batch)}

    def evaluated_detections(self, batch: dict) -> dict[str, list[np.ndarray]]:
        """What the evaluation scores: the detections in seconds of the raw weights and the EMA
        copy."""
        return {v: self.detections_in_seconds(batch, v == "student_ema") for v in self.variants()}

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        """Focal + DIoU (over the running normalizer) + weighted video-level loss. No host
        synchronisation outside the teacher's target selection; the losses run in float32 with
        autocast off."""
        hp = self.hp
        segments, labels, valid = self.batch_targets(batch)
        output = self.model(batch["features"], batch["mask"])
        with torch.autocast(self.device.type, enabled=False):
            cls_targets, reg_targets = self.model.targets(output, segments, labels, valid)
            points_valid = torch.cat(output.masks, dim=1)
            num_pos = ((cls_targets.sum(-1) > 0) & points_valid).sum()
            # regions the filter removed (student.data.ignore_score): while the pseudo labels
            # are the targets, neither action nor background
            ignore = None
            if "ignore_segments" in batch and not self.distilling():
                ignore = self.model.ignored(
                    output, batch["ignore_segments"], batch["ignore_valid"], segments, valid
                )
            norm = update_loss_normalizer(self.loss_normalizer, num_pos, hp.loss_norm_momentum)
            self.loss_normalizer.copy_(norm)
            losses = detection_losses(
                output,
                cls_targets,
                reg_targets,
                norm,
                self.model.num_bins,
                hp.focal_alpha,
                hp.focal_gamma,
                hp.iou_weight_power,
                hp.label_smoothing,
                ignore,
            )
            # one actionness class: a softmax over it is constant, so no video-level loss
            video = norm.new_zeros(())
            if not hp.class_agnostic:
                video = video_level_loss(
                    output.video_logits, batch["mask"], batch["video_labels"], hp.video_topk_divisor
                )
        loss = losses["cls"] + losses["reg"] + hp.video_loss_weight * video
        logs = {"loss": loss, **losses, "video": video, "num_pos": num_pos.float(), "norm": norm}
        self.log_dict(
            {LOG_PREFIX + k: v for k, v in logs.items()}, batch_size=batch["features"].shape[0]
        )
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """Step the optimizer, then update the EMA copy."""
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update(self.model)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The EMA's host-side update count follows the restored buffer."""
        if self.ema is not None:
            count = checkpoint.get("state_dict", {}).get("ema.updates")
            self.ema.num_updates = int(count) if count is not None else 0

    def on_train_start(self) -> None:
        """Warn before training when the EMA teacher will not be ready at the switch."""
        hp = self.hp
        if self.ema is None or hp.max_epochs <= hp.epochs_pseudo or not self.steps_per_epoch:
            return
        steps = hp.epochs_pseudo * self.steps_per_epoch
        share = initial_share(steps, self.ema.decay, self.ema.warmup)
        self.teacher_warned = share > TEACHER_INIT_SHARE_WARN
        if self.teacher_warned:
            self._warn_teacher(share, steps, "will still hold")

    def on_train_epoch_start(self) -> None:
        """At the switch to distillation: log the teacher's remaining share of its initial
        weights (``student/teacher_init_share``) and warn when it is large."""
        if self.ema is None or self.current_epoch != self.hp.epochs_pseudo:
            return
        share = self.ema.initial_share()
        self.log("student/teacher_init_share", share, sync_dist=True)
        self._announce_switch(share)

    @rank_zero_only
    def _announce_switch(self, share: float) -> None:
        assert self.ema is not None
        log.info(
            "student: epoch %d: distillation starts; the EMA teacher holds %.1f%% of its initial"
            " weights after %d updates",
            self.current_epoch,
            100 * share,
            self.ema.num_updates,
        )
        if share > TEACHER_INIT_SHARE_WARN and not self.teacher_warned:
            self._warn_teacher(share, self.ema.num_updates, "holds")

    @rank_zero_only
    def _warn_teacher(self, share: float, steps: int, verb: str) -> None:
        assert self.ema is not None
        log.warning(
            "student: at the switch to distillation the EMA teacher %s %.0f%% of its random"
            " initial weights (ema.decay=%g after %d updates): its pseudo labels will be poor"
            " and distillation can ruin the student. Use ema.decay <= %.4f, more pseudo-label"
            " epochs (student.epochs_pseudo), or ema.warmup=true.",
            verb,
            100 * share,
            self.ema.decay,
            steps,
            decay_for_share(steps, TEACHER_INIT_SHARE_WARN),
        )

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        """The ``optimizer`` partial on two parameter groups (decay on Conv/Linear weights only)
        and the per-step ``scheduler`` partial."""
        hp = self.hp
        optimizer_cfg = {**DEFAULT_OPTIMIZER, **(hp.optimizer or {})}
        weight_decay = float(optimizer_cfg.pop("weight_decay", 0.05))
        groups = weight_decay_groups(self.model, weight_decay)
        optimizer = instantiate(optimizer_cfg)(groups)
        stepping = self.trainer.estimated_stepping_batches  # also sets num_training_batches
        batches = self.trainer.num_training_batches
        if math.isfinite(batches):
            steps_per_epoch = max(1, math.ceil(batches / self.trainer.accumulate_grad_batches))
        else:
            # Trainer(max_steps=N) without max_epochs: Lightning does not load the data to count
            # batches, so spread the step budget over this module's epochs
            steps_per_epoch = max(1, math.ceil(stepping / hp.max_epochs))
        self.steps_per_epoch = steps_per_epoch
        total = min(hp.max_epochs * steps_per_epoch, stepping)
        scheduler = instantiate({**DEFAULT_SCHEDULER, **(hp.scheduler or {})})(
            optimizer, steps_per_epoch=steps_per_epoch, total_steps=total
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
