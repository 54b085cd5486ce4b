"""Stage 3: train the TriDet student on the filtered pseudo labels (or on ground truth with
``supervision=full``) with EMA-teacher distillation; detect on the test videos with the raw and
the EMA weights."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from fustal.config import selects_best, to_plain
from fustal.data.student_datamodule import PseudoLabelDataModule, make_collate
from fustal.fusion import config_fusion, fusion_described
from fustal.inference import predict_videos
from fustal.io import read_json, write_json
from fustal.metrics.results import VideoDetections, read_rows, score_rows, write_results
from fustal.metrics.shape import flatten
from fustal.metrics.validation import without_val
from fustal.pipeline.keys import selection_identity, stage_identity
from fustal.pipeline.stage import Stage
from fustal.pipeline.stages.common import (
    CHECKPOINTS,
    fit,
    held_out_metrics,
    picture_videos,
    seed_stage,
)
from fustal.pipeline.stages.outputs import (
    FilterOutputs,
    GeneratorOutputs,
    PseudoLabelSource,
    VideoScoreSource,
)
from fustal.pipeline.stages.sources import ScoreFile, pseudo_label_source
from fustal.student.build import student_datamodule, student_module
from fustal.student.module import StudentModule
from fustal.training.selection import chosen, selection_callbacks, selection_metric
from fustal.training.trainer import make_trainer
from fustal.viz.pictures import RunPictures

VARIANTS = ("student", "student_ema")
PICTURES_FILE = "pictures_train.json"
CHECKPOINT = "student.ckpt"


class DistillFromChoice(pl.Callback):
    """``student.distill_from=best``: when distillation starts (training epoch ``epoch``), the
    student and its EMA teacher both take the student's weights of its best held-out evaluation
    so far (its :class:`~fustal.training.selection.BestCheckpoint`), so that distillation
    refines the chosen student, not the last one (a student trained on noisy pseudo labels often
    peaks early, then fits their noise). A resumed run restores the same weights: the choice
    is part of the resume checkpoint."""

    def __init__(self, epoch: int, say: Callable[[str], None]) -> None:
        self.epoch = epoch
        self.say = say

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        choice = chosen(trainer).get("student") if trainer.current_epoch == self.epoch else None
        if choice is None or not isinstance(pl_module, StudentModule):
            return
        prefix = "model."
        weights = {
            k[len(prefix) :]: v for k, v in choice.state_dict.items() if k.startswith(prefix)
        }
        pl_module.model.load_state_dict(weights)
        if pl_module.ema is not None:
            pl_module.ema.module.load_state_dict(weights)
        self.say(
            f"student: distillation starts from the student of epoch {choice.epoch + 1}"
            f" (val {100 * choice.value:.1f})"
        )


@dataclass
class StudentOutputs:
    """Test detections per variant (``student``, ``student_ema``) in seconds, the stage's
    metrics (``<variant>.test``, and ``<variant>.val`` with held-out videos), the detections the
    pictures show on the first training videos (the EMA weights when there are some), the
    checkpoint, and the detections per variant on the held-out videos."""

    test: dict[str, VideoDetections]
    metrics: dict[str, Any]
    pictures: VideoDetections
    checkpoint: Path
    val: dict[str, VideoDetections]


class StudentStage(Stage[StudentOutputs]):
    name = "student"
    exported = ("student_test.json", "student_ema_test.json")

    @classmethod
    def inputs(cls, cfg: DictConfig) -> tuple[str, ...]:
        """The filtered pseudo labels (weak supervision), the unfiltered ones with
        ``student.data.ignore_score`` (the filter's source), and the video-level scores that
        ``fusion`` fuses: the generator's or a score file's."""
        targets: tuple[str, ...] = ("filter",) if cfg.supervision == "weak" else ()
        if targets and cfg.student.data.get("ignore_score") is not None:
            targets += (pseudo_label_source(cfg),)
        scores = {"generator": ("generator",), "file": (ScoreFile.name,)}
        return tuple(dict.fromkeys(targets + scores.get(cfg.fusion.source, ())))

    @property
    def unfiltered(self) -> VideoDetections | None:
        """The pseudo labels the filter received, when ``student.data.ignore_score`` reads
        them (else None)."""
        if "filter" not in self.upstream or self.cfg.student.data.get("ignore_score") is None:
            return None
        return self.input(pseudo_label_source(self.cfg), PseudoLabelSource).pseudo_labels

    @property
    def targets(self) -> VideoDetections | None:
        """The filtered pseudo labels (None: the ground truth, supervision=full)."""
        if "filter" not in self.upstream:
            return None
        return self.input("filter", FilterOutputs).filtered

    @property
    def video_scores(self) -> tuple[dict[str, np.ndarray], str] | None:
        """What ``fusion`` fuses: ``({video_id: [C]}, where they come from)``, None: off."""
        for name in ("generator", ScoreFile.name):
            if name in self.upstream:
                outputs = self.input(name, VideoScoreSource)
                return outputs.video_scores, outputs.source
        return None

    @property
    def video_detections(self) -> VideoDetections | None:
        """What ``fusion.level=detections`` fuses: the generator's detections of the training,
        held-out and test videos (seconds); None at ``level=video``."""
        fusion = self.fusion
        if fusion is None or fusion["level"] != "detections" or "generator" not in self.upstream:
            return None
        outputs = self.input("generator", GeneratorOutputs)
        return {**outputs.pseudo_labels, **outputs.val, **outputs.test}

    @property
    def fusion(self) -> dict[str, Any] | None:
        """The module's ``fusion`` keywords (None: off)."""
        if self.video_scores is None:
            return None
        return config_fusion(self.cfg.fusion)

    @property
    def full(self) -> bool:
        return self.cfg.supervision == "full"

    def schedule(self) -> tuple[int, int, dict[str, Any]]:
        """``(max_epochs, epochs_pseudo, module overrides)`` of this supervision: weak trains
        ``epochs_pseudo`` epochs on pseudo labels then ``epochs_distill`` of distillation (none
        without an EMA: ``ema=none``); full trains ``full_epochs`` on ground truth with
        ``full_schedule``. The overrides pass the ``ema`` group's settings (no EMA copy with
        ``ema=none``)."""
        scfg, ema = self.cfg.student, self.cfg.ema
        overrides: dict[str, Any] = {
            "ema_decay": ema.decay if ema.enabled else None,
            "ema_warmup": ema.warmup,
            "teacher_score_thresh": ema.score_thresh,
        }
        if self.full:
            overrides["scheduler"] = {"schedule": scfg.full_schedule}
            return scfg.full_epochs, scfg.full_epochs, overrides
        distill = scfg.epochs_distill if ema.enabled else 0
        return scfg.epochs_pseudo + distill, scfg.epochs_pseudo, overrides

    def module_config(self) -> DictConfig:
        """``student.module`` with the overrides of :meth:`schedule`."""
        module = OmegaConf.create(to_plain(self.cfg.student.module))
        return cast(DictConfig, OmegaConf.merge(module, self.schedule()[2]))

    def key_parts(self) -> dict[str, Any]:
        scfg = self.cfg.student
        max_epochs, epochs_pseudo, _ = self.schedule()
        module = self.module_config()
        return {
            "epochs": [max_epochs, epochs_pseudo],
            "gradient_clip_val": scfg.gradient_clip_val,
            "val_every": scfg.val_every,
            "distill_from": "best" if self.distills_from_best else "last",
            "supervision": self.cfg.supervision,
            "fusion": self.fusion,
            **selection_identity(self.cfg, self.selects_best),
            **stage_identity(self.cfg, "student", module, self.ctx.data.student.features),
        }

    @property
    def selects_best(self) -> bool:
        """Whether the held-out evaluations choose the weights (``student.select``; ``auto``
        keeps the last ones when ``student.val_every=0`` evaluates nothing during training)."""
        scfg = self.cfg.student
        return bool(scfg.val_every) and selects_best(scfg.select, self.cfg.validation.mode)

    @property
    def distills_from_best(self) -> bool:
        """Whether distillation starts from the chosen student (``student.distill_from=best``,
        with held-out choices and a distillation phase)."""
        max_epochs, epochs_pseudo, _ = self.schedule()
        return (
            self.cfg.student.distill_from == "best"
            and self.selects_best
            and max_epochs > epochs_pseudo
        )

    def chosen_variants(self, module: StudentModule) -> dict[str, int]:
        """The variants whose weights are chosen, with the first epoch each may be chosen at:
        the student any epoch; its EMA copy within the distillation phase, where it is the
        teacher (any epoch when there is none, e.g. ``supervision=full``)."""
        max_epochs, epochs_pseudo, _ = self.schedule()
        distills = max_epochs > epochs_pseudo
        return {
            v: epochs_pseudo if v == "student_ema" and distills else 0 for v in module.variants()
        }

    def build(self) -> tuple[StudentModule, PseudoLabelDataModule]:
        cfg, data = self.cfg, self.ctx.data.student
        max_epochs, epochs_pseudo, _ = self.schedule()
        seed_stage(cfg.seed)
        module = student_module(
            self.module_config(),
            data,
            cfg.dataset.tiou_thresholds,
            max_epochs=max_epochs,
            epochs_pseudo=epochs_pseudo,
            fusion=self.fusion,
            validation=cfg.validation.mode,
        )
        scores = self.video_scores
        dm = student_datamodule(
            cfg.student.data,
            data,
            module.model,
            cfg.seed,
            targets=self.targets,
            video_scores=None if scores is None else scores[0],
            video_detections=self.video_detections,
            unfiltered=self.unfiltered,
            num_workers=cfg.num_workers,
        )
        return module, dm

    def compute(self, folder: Path) -> StudentOutputs:
        cfg, scfg, ctx = self.cfg, self.cfg.student, self.ctx
        module, dm = self.build()
        max_epochs, epochs_pseudo, _ = self.schedule()
        what = "ground truth" if self.full else "pseudo labels"
        plan = f"stage 3/3 student: {epochs_pseudo} epochs on {what}"
        if max_epochs > epochs_pseudo:
            plan += f", then {max_epochs - epochs_pseudo} of EMA distillation"
            plan += " from the best student so far" if self.distills_from_best else ""
        if scfg.module.get("class_agnostic"):
            plan += "; class-agnostic"
        fusion = self.fusion
        if fusion is not None and self.video_scores is not None:
            plan += f"; {fusion_described(fusion, self.video_scores[1])}"
        if self.selects_best:
            plan += f"; the best held-out evaluation (every {scfg.val_every}) is used"
        ctx.say(plan)
        checkpoints = folder / CHECKPOINTS
        chooser = (
            selection_callbacks(checkpoints, self.chosen_variants(module), cfg.validation.mode)
            if self.selects_best
            else []
        )
        if self.distills_from_best:
            chooser.append(DistillFromChoice(epochs_pseudo, ctx.say))
        trainer = make_trainer(
            cfg,
            "student",
            checkpoint={
                "dirpath": str(checkpoints),
                "every_n_epochs": 1,
                "save_on_train_epoch_end": True,
            },
            stage_callbacks=chooser,
            max_epochs=max_epochs,
            check_val_every_n_epoch=scfg.val_every or max_epochs + 1,
            gradient_clip_val=scfg.gradient_clip_val,
        )
        fit(ctx, self.name, trainer, module, dm, folder)
        selected = self.restore_choice(trainer, module) if self.selects_best else {}
        trainer.save_checkpoint(folder / CHECKPOINT, weights_only=False)
        ctx.say("student: detecting on the test videos")
        test = predict_videos(trainer, module, dm.loader("test"))
        data, tiou = ctx.data.student, list(cfg.dataset.tiou_thresholds)
        metrics = {
            **{
                f"{variant}.test": score_rows(rows, dm.videos["test"], data.num_classes, tiou)
                for variant, rows in test.items()
            },
            **selected,
        }
        val: dict[str, VideoDetections] = {}
        if dm.videos["val"]:
            ctx.say(f"student: detecting on the {len(dm.videos['val'])} held-out videos")
            val = predict_videos(trainer, module, dm.loader("val"))
        pictures = self.picture_detections(trainer, module, dm)
        outputs = StudentOutputs(test, flatten(metrics), pictures, folder / CHECKPOINT, val)
        return self.validated(outputs)

    def restore_choice(self, trainer: pl.Trainer, module: StudentModule) -> dict[str, Any]:
        """Load each variant's weights of its best held-out evaluation into ``module`` (the
        student's network from its choice, the EMA copy from its own); returns the
        ``<variant>.selected`` metrics entries (a variant with no evaluation keeps its last
        weights)."""
        max_epochs = self.schedule()[0]
        metric = selection_metric(self.cfg.validation.mode)
        choices = chosen(trainer)
        state = module.state_dict()
        entries, said = {}, []
        for variant in module.variants():
            choice = choices.get(variant)
            name = "student + EMA" if variant == "student_ema" else "student"
            if choice is None:
                said.append(f"{name}: no held-out evaluation, the last epoch")
                continue
            prefix = "ema." if variant == "student_ema" else "model."
            state.update({k: v for k, v in choice.state_dict.items() if k.startswith(prefix)})
            epoch = choice.epoch + 1
            said.append(f"{name}: epoch {epoch} (val {metric} {100 * choice.value:.1f})")
            entry = {"epoch": epoch, "epochs": max_epochs, "metric": metric, "value": choice.value}
            entries[f"{variant}.selected"] = entry
        module.load_state_dict(state)
        self.ctx.say(f"student: selected of {max_epochs} epochs: {'; '.join(said)}")
        return entries

    def validated(self, outputs: StudentOutputs) -> StudentOutputs:
        """``outputs`` with ``<variant>.val`` (:func:`held_out_metrics`; the video-level mAP of
        each variant's best detection score per class)."""
        outputs.metrics.update(held_out_metrics(self.ctx, self.ctx.data.student, outputs.val))
        return outputs

    def show(self, outputs: StudentOutputs, shown: RunPictures) -> None:
        """The detections of the EMA weights when there are some, else the student's."""
        name = "student + EMA" if "student_ema" in outputs.test else "student"
        shown.train_tracks[name] = outputs.pictures
        shown.test_tracks[name] = outputs.test.get("student_ema", outputs.test["student"])

    def save(self, outputs: StudentOutputs, folder: Path) -> None:
        classes = self.ctx.data.student.classes
        for variant in VARIANTS:
            write_results(folder / f"{variant}_test.json", outputs.test.get(variant, {}), classes)
            write_results(folder / f"{variant}_val.json", outputs.val.get(variant, {}), classes)
        write_json(folder / "metrics.json", without_val(outputs.metrics))
        write_results(folder / PICTURES_FILE, outputs.pictures, classes)

    def picture_detections(
        self, trainer: Any, module: StudentModule, dm: PseudoLabelDataModule
    ) -> VideoDetections:
        """Detections on the first training videos (what the pictures show), from the module in
        memory: the EMA weights when there are some."""
        fused = [m for m in (dm.video_scores, dm.video_detections) if m is not None]
        videos = [v for v in picture_videos(dm.videos["train"]) if all(v.id in m for m in fused)]
        if not videos:  # a score file without these training videos: nothing to fuse them with
            return {}
        loader = DataLoader(
            dm.dataset(videos),
            batch_size=dm.eval_batch_size,
            collate_fn=make_collate(dm.max_seq_len, dm.max_stride),
        )
        out = predict_videos(trainer, module, loader)
        return out["student_ema"] if "student_ema" in out else out["student"]

    def load(self, folder: Path) -> StudentOutputs:
        classes = self.ctx.data.student.classes
        written = read_json(folder / "metrics.json")
        variants = [v for v in VARIANTS if f"{v}.test" in written]
        test = {v: read_rows(folder / f"{v}_test.json", classes, "cache") for v in variants}
        val = {}
        if self.ctx.data.student.val_videos():
            val = {v: read_rows(folder / f"{v}_val.json", classes, "cache") for v in variants}
        pictures = read_rows(folder / PICTURES_FILE, classes, "cache")
        outputs = StudentOutputs(test, flatten(written), pictures, folder / CHECKPOINT, val)
        return self.validated(outputs)
