"""Stage 3: train the TriDet student on the filtered pseudo labels (or on ground truth with
``supervision=full``) with EMA-teacher distillation; detect on the test videos with the raw and
the EMA weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from fustal.data.student_datamodule import PseudoLabelDataModule, StudentVideos, make_collate
from fustal.inference import feature_timing, predict_videos
from fustal.io import read_json, write_json
from fustal.metrics.quality import score_rows
from fustal.metrics.results import VideoDetections, read_results, results_to_rows, rows_to_results
from fustal.pipeline.stage import RunContext, Stage
from fustal.pipeline.stages.common import (
    CHECKPOINTS,
    COSMETIC_DATA_KEYS,
    data_identity,
    fit,
    picture_videos,
    seed_stage,
    without,
)
from fustal.student.module import StudentModule
from fustal.training.distributed import is_global_zero
from fustal.training.trainer import make_trainer

VARIANTS = ("student", "student_ema")
PICTURES_FILE = "pictures_train.json"


@dataclass
class VideoScores:
    """Video-level class scores to fuse into the student's detections: ``{video_id: [C]}``, what
    identifies them (a stage key or a file's digest) and where they come from (messages)."""

    scores: dict[str, np.ndarray]
    key: str
    source: str


@dataclass
class StudentOutputs:
    """Test detections per variant (``student``, ``student_ema``) in seconds, the stage's
    metrics (``<variant>.test``), the detections the pictures show on the first training
    videos (the EMA weights when there are some), and the checkpoint."""

    test: dict[str, VideoDetections]
    metrics: dict[str, Any]
    pictures: VideoDetections
    checkpoint: Path


class StudentStage(Stage[StudentOutputs]):
    name = "student"
    artifacts = (
        "student.ckpt",
        "student_test.json",
        "student_ema_test.json",
        "metrics.json",
        PICTURES_FILE,
    )
    exported = ("student_test.json", "student_ema_test.json")

    def __init__(
        self,
        ctx: RunContext,
        targets: VideoDetections | None,
        upstream: str,
        video_scores: VideoScores | None = None,
    ) -> None:
        """``targets``: the filtered pseudo labels (None: the ground truth, supervision=full),
        identified by ``upstream``; ``video_scores``: what ``fusion`` fuses (None: fusion off)."""
        super().__init__(ctx)
        self.targets = targets
        self.upstream = upstream
        self.video_scores = video_scores

    @property
    def fusion(self) -> dict[str, Any] | None:
        """The module's ``fusion`` keywords (None: off)."""
        if self.video_scores is None:
            return None
        return {"topk": self.cfg.fusion.topk, "rule": self.cfg.fusion.rule}

    @property
    def full(self) -> bool:
        return self.cfg.supervision == "full"

    def schedule(self) -> tuple[int, int, dict[str, Any]]:
        """``(max_epochs, epochs_pseudo, module overrides)`` of this supervision: weak trains
        ``epochs_pseudo`` epochs on pseudo labels then ``epochs_distill`` of distillation (none
        without an EMA: ``ema=none``); full trains ``full_epochs`` on ground truth with
        ``full_schedule``."""
        scfg, ema = self.cfg.student, self.cfg.ema
        overrides: dict[str, Any] = {} if ema.enabled else {"ema_decay": None}
        if self.full:
            overrides["scheduler"] = {"schedule": scfg.full_schedule}
            return scfg.full_epochs, scfg.full_epochs, overrides
        distill = scfg.epochs_distill if ema.enabled else 0
        return scfg.epochs_pseudo + distill, scfg.epochs_pseudo, overrides

    def key_parts(self) -> dict[str, Any]:
        scfg = self.cfg.student
        max_epochs, epochs_pseudo, overrides = self.schedule()
        return {
            "epochs": [max_epochs, epochs_pseudo],
            "module": without(cast(DictConfig, OmegaConf.merge(scfg.module, overrides))),
            "data": without(scfg.data, *COSMETIC_DATA_KEYS),
            "gradient_clip_val": scfg.gradient_clip_val,
            "val_every": scfg.val_every,
            "supervision": self.cfg.supervision,
            "up": self.upstream,
            "fusion": None
            if self.video_scores is None
            else {**(self.fusion or {}), "scores": self.video_scores.key},
            **data_identity(self.ctx, "student"),
        }

    def build(self) -> tuple[StudentModule, PseudoLabelDataModule]:
        cfg, data = self.cfg, self.ctx.data.student
        max_epochs, epochs_pseudo, overrides = self.schedule()
        seed_stage(cfg.seed)
        module_cfg = OmegaConf.merge(cfg.student.module, overrides)
        module = instantiate(module_cfg, _partial_=True, _convert_="all", _recursive_=False)(
            feature_dim=data.feature_dim(),
            num_classes=data.num_classes,
            max_epochs=max_epochs,
            epochs_pseudo=epochs_pseudo,
            tiou_thresholds=list(cfg.dataset.tiou_thresholds),
            classes=data.classes,
            feature_timing=feature_timing(data),
            fusion=self.fusion,
        )
        dm = instantiate(cfg.student.data, _partial_=True, _convert_="all")(
            data=data,
            targets=self.targets,
            max_seq_len=module.model.max_seq_len,
            max_stride=module.model.max_stride,
            seed=cfg.seed,
            video_scores=None if self.video_scores is None else self.video_scores.scores,
        )
        return module, dm

    def run(self, folder: Path) -> StudentOutputs:
        cfg, scfg, ctx = self.cfg, self.cfg.student, self.ctx
        module, dm = self.build()
        max_epochs, epochs_pseudo, _ = self.schedule()
        what = "ground truth" if self.full else "pseudo labels"
        plan = f"stage 3/3 student: {epochs_pseudo} epochs on {what}"
        if max_epochs > epochs_pseudo:
            plan += f", then {max_epochs - epochs_pseudo} of EMA distillation"
        if scfg.module.get("class_agnostic"):
            plan += "; class-agnostic"
        if self.fusion is not None and self.video_scores is not None:
            plan += (
                f"; classes fused from {self.video_scores.source}'s video-level scores"
                f" (top {self.fusion['topk']}, {self.fusion['rule']})"
            )
        ctx.say(plan)
        trainer = make_trainer(
            cfg,
            "student",
            checkpoint={
                "dirpath": str(folder / CHECKPOINTS),
                "every_n_epochs": 1,
                "save_on_train_epoch_end": True,
            },
            max_epochs=max_epochs,
            check_val_every_n_epoch=scfg.val_every or max_epochs + 1,
            gradient_clip_val=scfg.gradient_clip_val,
        )
        fit(ctx, self.name, trainer, module, dm, folder)
        trainer.save_checkpoint(folder / "student.ckpt", weights_only=False)
        ctx.say("student: detecting on the test videos")
        test = predict_videos(trainer, module, dm.loader("test"))
        data, tiou = ctx.data.student, list(cfg.dataset.tiou_thresholds)
        metrics = {
            f"{variant}.test": score_rows(rows, dm.test_videos, data.num_classes, tiou)
            for variant, rows in test.items()
        }
        pictures = self.picture_detections(trainer, module, dm)
        if is_global_zero():
            for variant in VARIANTS:
                results = rows_to_results(test.get(variant, {}), data.classes)
                write_json(folder / f"{variant}_test.json", results)
            write_json(folder / "metrics.json", metrics)
            write_json(folder / PICTURES_FILE, rows_to_results(pictures, data.classes))
        return StudentOutputs(test, metrics, pictures, folder / "student.ckpt")

    def picture_detections(
        self, trainer: Any, module: StudentModule, dm: PseudoLabelDataModule
    ) -> VideoDetections:
        """Detections on the first training videos (what the pictures show), from the module in
        memory: the EMA weights when there are some."""
        scored = dm.video_scores
        videos = [v for v in picture_videos(dm.train_videos) if scored is None or v.id in scored]
        if not videos:  # a score file without these training videos: nothing to fuse them with
            return {}
        loader = DataLoader(
            StudentVideos(
                dm.data, videos, None, False, dm.max_seq_len, video_scores=dm.video_scores
            ),
            batch_size=dm.eval_batch_size,
            collate_fn=make_collate(dm.max_seq_len, dm.max_stride),
        )
        out = predict_videos(trainer, module, loader)
        return out["student_ema"] if "student_ema" in out else out["student"]

    def load(self, folder: Path) -> StudentOutputs:
        classes = self.ctx.data.student.classes
        metrics = read_json(folder / "metrics.json")
        test = {
            variant: results_to_rows(
                read_results(folder / f"{variant}_test.json"), classes, "cache"
            )
            for variant in VARIANTS
            if f"{variant}.test" in metrics
        }
        pictures = results_to_rows(read_results(folder / PICTURES_FILE), classes, "cache")
        return StudentOutputs(test, metrics, pictures, folder / "student.ckpt")
