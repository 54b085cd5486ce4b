"""Stage 1: train the cross-video contrastive generator, then turn its CAS into proposals on the
training videos (the pseudo labels) and the test videos (its own detections), and keep its
video-level class scores (what ``fusion=generator`` fuses into the student's detections)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import DataLoader

from fustal.config import selects_best
from fustal.config.schema import GeneratorSchema
from fustal.data.generator_datamodule import GeneratorDataModule, GeneratorVideos, collate_videos
from fustal.errors import FustalError
from fustal.fusion import DETECTION_FILE, SCORE_FILE, read_score_file, score_file_payload
from fustal.generator.build import generator_datamodule, generator_module
from fustal.generator.module import VIDEO_SCORES, GeneratorModule
from fustal.inference import predict_videos
from fustal.io import read_json, write_json
from fustal.metrics.quality import rows_quality
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
from fustal.pipeline.stages.outputs import GeneratorOutputs
from fustal.training.selection import chosen, selection_callbacks, selection_metric
from fustal.training.trainer import make_trainer
from fustal.viz.pictures import RunPictures
from fustal.viz.rundir import read_cas, write_cas

CAS_FILE = "pictures_cas.npz"
# what the pictures draw of the generator's outputs (fustal.viz.rundir.write_cas)
PICTURE_CAS_KEYS = ("cas", "actionness", "seconds_per_step")
CHECKPOINT = "generator.ckpt"
VAL_FILE = "generator_val.json"


def check_contract(module: type, outputs: dict[str, Any]) -> None:
    """A generator's ``predict_step`` returns ``"video_id"``, ``"generator"`` (per video ``[K, 4]``
    rows: class, score, start s, end s) and ``"video_scores"`` (per video ``[C]``); a module of
    the user's that does not is a one-line error (docs/extending.md)."""
    missing = [key for key in ("generator", VIDEO_SCORES) if key not in outputs]
    if missing:
        name = f"{module.__module__}.{module.__qualname__}"
        raise FustalError(
            f"generator.module: {name}.predict_step returned no {', '.join(map(repr, missing))}"
            ' (expected {"video_id": [...], "generator": [[K, 4] rows], "video_scores":'
            " [[C] scores]} per batch)"
        )


class GeneratorStage(Stage[GeneratorOutputs]):
    name = "generator"
    exported = ("pseudo_labels.json", DETECTION_FILE, SCORE_FILE)

    def key_parts(self) -> dict[str, Any]:
        gcfg = self.cfg.generator
        return {
            "max_steps": gcfg.max_steps,
            "val_every": gcfg.val_every,
            **selection_identity(self.cfg, self.selects_best, self.patience),
            **stage_identity(self.cfg, "generator", gcfg.module, self.ctx.data.generator.features),
        }

    @property
    def selects_best(self) -> bool:
        """Whether the best held-out evaluation chooses the weights (``generator.select``; a
        user's generator group may leave it out: the schema's default)."""
        select = self.cfg.generator.get("select", GeneratorSchema.select)
        return selects_best(select, self.cfg.validation.mode)

    @property
    def patience(self) -> int | None:
        return self.cfg.generator.get("patience", GeneratorSchema.patience)

    def build(self) -> tuple[GeneratorModule, GeneratorDataModule]:
        """The module and DataModule from the ``generator`` group (``_target_`` configs)."""
        cfg, data = self.cfg, self.ctx.data.generator
        seed_stage(cfg.seed)
        dm = generator_datamodule(cfg.generator.data, data, cfg.seed, num_workers=cfg.num_workers)
        tiou = cfg.dataset.tiou_thresholds
        module = generator_module(
            cfg.generator.module, data, tiou, dm.num_segments, validation=cfg.validation.mode
        )
        return module, dm

    def compute(self, folder: Path) -> GeneratorOutputs:
        cfg, gcfg, ctx = self.cfg, self.cfg.generator, self.ctx
        module, dm = self.build()
        mode = cfg.validation.mode
        evaluated = "test mAP" if mode == "test" else f"held-out {selection_metric(mode)}"
        plan = f"stage 1/3 generator: training {gcfg.max_steps} steps ({evaluated} every"
        plan += f" {gcfg.val_every}{'; the best step is used' if self.selects_best else ''})"
        ctx.say(plan)
        per_classes = module.hparams.get("weight_decay_classes")
        if per_classes is not None:
            decay = module.optimizer_config.get("weight_decay")
            ctx.say(
                f"generator: weight decay {decay:.3g} for {module.hparams['num_classes']} classes"
                f" (generator.module.weight_decay_classes={per_classes})"
            )
        checkpoints = folder / CHECKPOINTS
        if self.selects_best:
            # saved after each evaluation, so that a resumed run holds the choice so far
            schedule: dict[str, Any] = {"every_n_epochs": 1, "save_on_train_epoch_end": False}
            chooser = selection_callbacks(checkpoints, {"generator": 0}, mode, self.patience)
        else:
            schedule, chooser = {"every_n_train_steps": gcfg.val_every}, []
        trainer = make_trainer(
            cfg,
            "generator",
            checkpoint={"dirpath": str(checkpoints), **schedule},
            stage_callbacks=chooser,
            max_steps=gcfg.max_steps,
            val_check_interval=gcfg.val_every,
            check_val_every_n_epoch=None,
        )
        fit(ctx, self.name, trainer, module, dm, folder)
        selected = self.restore_choice(trainer, module) if self.selects_best else {}
        trainer.save_checkpoint(folder / CHECKPOINT, weights_only=False)
        ctx.say("generator: pseudo-labelling the training videos and detecting on the test videos")
        train_out = predict_videos(trainer, module, dm.loader("train"))
        test_out = predict_videos(trainer, module, dm.loader("test"))
        check_contract(type(module), train_out)
        pseudo, test = train_out["generator"], test_out["generator"]
        data, tiou = ctx.data.generator, list(cfg.dataset.tiou_thresholds)
        metrics = {
            "generator.test": score_rows(test, dm.videos["test"], data.num_classes, tiou),
            "pseudo_labels.raw": rows_quality(pseudo, dm.videos["train"], data.num_classes, tiou),
            **selected,
        }
        val: VideoDetections = {}
        val_scores: dict[str, np.ndarray] = {}
        if dm.videos["val"]:
            ctx.say(f"generator: detecting on the {len(dm.videos['val'])} held-out videos")
            val_out = predict_videos(trainer, module, dm.loader("val"))
            val, val_scores = val_out["generator"], val_out[VIDEO_SCORES]
        outputs = GeneratorOutputs(
            pseudo,
            test,
            {**train_out[VIDEO_SCORES], **val_scores, **test_out[VIDEO_SCORES]},
            flatten(metrics),
            self.picture_cas(module, dm) if hasattr(module, "cas") else {},
            folder / CHECKPOINT,
            val,
        )
        return self.validated(outputs)

    def restore_choice(self, trainer: pl.Trainer, module: GeneratorModule) -> dict[str, Any]:
        """Load the weights of the best held-out evaluation into ``module``; returns the
        ``generator.selected`` metrics entry (empty when no evaluation ran)."""
        gcfg, mode = self.cfg.generator, self.cfg.validation.mode
        choice = chosen(trainer).get("generator")
        if choice is None:
            self.ctx.say(
                f"generator: no held-out evaluation ran (generator.val_every={gcfg.val_every},"
                f" max_steps={gcfg.max_steps}): using the last step"
            )
            return {}
        module.load_state_dict(choice.state_dict)
        metric = selection_metric(mode)
        ran = trainer.global_step
        stopped = f"; stopped early at step {ran}" if ran < gcfg.max_steps else ""
        self.ctx.say(
            f"generator: selected step {choice.step} of {gcfg.max_steps} (val {metric}"
            f" {100 * choice.value:.1f}{stopped})"
        )
        entry = {"step": choice.step, "steps": trainer.global_step, "metric": metric}
        return {"generator.selected": {**entry, "value": choice.value}}

    def validated(self, outputs: GeneratorOutputs) -> GeneratorOutputs:
        """``outputs`` with ``generator.val`` (:func:`held_out_metrics`; the video-level mAP of
        the generator's own video scores)."""
        detections = {"generator": outputs.val}
        data = self.ctx.data.generator
        outputs.metrics.update(held_out_metrics(self.ctx, data, detections, outputs.video_scores))
        return outputs

    def picture_cas(
        self, module: GeneratorModule, dm: GeneratorDataModule
    ) -> dict[str, dict[str, Any]]:
        """The CAS the pictures show: of the first training and test videos, from the module in
        memory."""
        videos = picture_videos(dm.videos["train"]) + picture_videos(dm.videos["test"])
        loader = DataLoader(
            GeneratorVideos(dm.data, videos, dm.num_segments, train=False),
            batch_size=dm.eval_batch_size,
            collate_fn=collate_videos,
        )
        module.eval()
        out = {}
        for batch in loader:
            batch = {k: v.to(module.device) if hasattr(v, "to") else v for k, v in batch.items()}
            for vid, item in zip(batch["video_id"], module.cas(batch), strict=True):
                out[vid] = {key: item[key] for key in PICTURE_CAS_KEYS}
        return out

    def show(self, outputs: GeneratorOutputs, shown: RunPictures) -> None:
        """The CAS, the test detections and (unless ``pseudo_labels=PATH`` replaces them) the
        pseudo labels."""
        shown.cas = outputs.cas
        shown.test_tracks["generator"] = outputs.test
        if not self.cfg.pseudo_labels:
            shown.pseudo["raw"] = shown.train_tracks["pseudo labels (raw)"] = outputs.pseudo_labels

    def save(self, outputs: GeneratorOutputs, folder: Path) -> None:
        classes = self.ctx.data.generator.classes
        write_results(folder / "pseudo_labels.json", outputs.pseudo_labels, classes)
        write_results(folder / DETECTION_FILE, outputs.test, classes)
        write_json(folder / SCORE_FILE, score_file_payload(outputs.video_scores, classes))
        write_results(folder / VAL_FILE, outputs.val, classes)
        write_json(folder / "metrics.json", without_val(outputs.metrics))
        write_cas(folder / CAS_FILE, outputs.cas)

    def load(self, folder: Path) -> GeneratorOutputs:
        data = self.ctx.data.generator
        classes = data.classes
        pseudo = read_rows(folder / "pseudo_labels.json", classes, "cache")
        test = read_rows(folder / DETECTION_FILE, classes, "cache")
        val = read_rows(folder / VAL_FILE, classes, "cache")
        videos = [v.id for v in data.train_videos() + data.val_videos() + data.test_videos()]
        outputs = GeneratorOutputs(
            pseudo,
            test,
            read_score_file(folder / SCORE_FILE, classes, videos),
            flatten(read_json(folder / "metrics.json")),
            read_cas(folder / CAS_FILE),
            folder / CHECKPOINT,
            val,
        )
        return self.validated(outputs)
