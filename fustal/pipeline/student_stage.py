"""Stages 2 and 3: filter the pseudo labels, train the TriDet student on them (or on ground
truth with ``supervision=full``) with EMA-teacher distillation, and evaluate raw and EMA models."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from fustal.config import to_plain
from fustal.data.annotations import Video
from fustal.data.dataset import StageData
from fustal.data.features import Timing, detections_to_seconds
from fustal.data.student_datamodule import PseudoLabelDataModule, StudentVideos, make_collate
from fustal.errors import FustalError
from fustal.inference import feature_timing
from fustal.io import read_json, write_json
from fustal.metrics.detection import detection_map
from fustal.metrics.results import (
    gt_to_detections,
    proposals_to_results,
    read_results,
    results_to_detections,
)
from fustal.pipeline.cache import file_digest
from fustal.pipeline.context import (
    BatchReseed,
    LastCheckpoint,
    RunContext,
    dataset_identity,
    fault_point,
    gather_dict,
    is_global_zero,
    make_trainer,
    seed_stage,
    stage_dir,
    stage_lock,
    trainer_identity,
)
from fustal.pipeline.generator_stage import feature_dim, score_results
from fustal.pseudo.filters import filter_results
from fustal.student.module import StudentModule

log = logging.getLogger(__name__)

ARTIFACTS = ["student.ckpt", "student_test.json", "student_ema_test.json", "metrics.json"]


def run_filter_stage(ctx: RunContext, data: StageData, pseudo_path: Path) -> dict:
    """Filter the pseudo labels (METHOD.md section 4), write ``pseudo_labels.filtered.json`` and
    score raw and filtered labels against training ground truth (diagnostics only)."""
    cfg = ctx.cfg
    raw = {"results": read_results(pseudo_path)}
    unknown = sorted(set(raw["results"]) - {v.id for v in data.train_videos()})
    if unknown:
        raise FustalError(
            f"{pseudo_path}: {len(unknown)} videos are not training videos of the dataset"
            f" (first: {unknown[0]})"
        )
    classes = set(data.classes)
    for vid, entries in raw["results"].items():
        for entry in entries:
            if entry["label"] not in classes:
                raise FustalError(f"{pseudo_path}: video {vid}: unknown class '{entry['label']}'")
    try:
        filtered, stats = filter_results(raw, cfg.filter.min_density, cfg.filter.min_score)
    except FustalError as err:
        raise FustalError(f"{pseudo_path}: {err}") from None
    if not stats["before"]:
        raise FustalError(
            f"{pseudo_path}: no pseudo labels (nothing for the student to learn from)"
        )
    if not stats["after"]:
        raise FustalError(
            f"filter={cfg.filter.name}: no pseudo label passes"
            f" (min_density={cfg.filter.min_density}, min_score={cfg.filter.min_score})"
            f" out of {stats['before']}; lower filter.min_score"
            " or filter.min_density, or use filter=none"
        )
    ctx.write_json("pseudo_labels.filtered.json", filtered)
    fault_point("filter", "written")
    tiou = list(cfg.dataset.tiou_thresholds)
    if "pseudo_labels.raw" not in ctx.metrics.get("pseudo_labels", {}):
        ctx.record("pseudo_labels.raw", score_results(raw, data.train_videos(), data.classes, tiou))
    ctx.record(
        "pseudo_labels.filtered", score_results(filtered, data.train_videos(), data.classes, tiou)
    )
    ctx.record("pseudo_labels.filter_stats", stats)
    return filtered


def results_to_targets(results: dict, data: StageData) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """ActivityNet results -> per-video (segments [M, 2] seconds, class indices [M])."""
    videos = data.train_videos()
    ids = [v.id for v in videos]
    dets = results_to_detections(results["results"], data.classes, ids)
    out = {}
    for i, vid in enumerate(ids):
        sel = dets.video == i
        out[vid] = (dets.segment[sel], dets.label[sel])
    return out


@torch.no_grad()
def student_detections(
    module: StudentModule, loader: DataLoader, use_ema: bool
) -> dict[str, np.ndarray]:
    """Detections ``[K, 4]`` (class, score, start_s, end_s) for this rank's videos."""
    out: dict[str, np.ndarray] = {}
    for batch in loader:
        batch = {k: v.to(module.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        for i, det in enumerate(module.predict_batch(batch, use_ema=use_ema)):
            timing = Timing(float(batch["stride_s"][i]), float(batch["window_s"][i]))
            duration = float(batch["duration"][i])
            out[batch["video_id"][i]] = detections_to_seconds(
                det, float(batch["offset"][i]), timing, None if np.isinf(duration) else duration
            )
    return out


def max_stride(scfg: DictConfig) -> int:
    """Largest feature stride of the student's pyramid (inputs are padded to a multiple)."""
    return 2 ** int(scfg.model.arch[2])


def picture_detections(
    checkpoint: Path,
    data: StageData,
    videos: Sequence[Video],
    scfg: DictConfig,
    device: torch.device,
) -> tuple[str, dict]:
    """Detections of the student saved in ``checkpoint`` (its EMA copy when it has one) on
    ``videos``: ``(track name, ActivityNet results)``."""
    module = StudentModule.load_from_checkpoint(checkpoint, map_location=device)
    use_ema = module.ema is not None
    loader = DataLoader(
        StudentVideos(data, videos, None, False, scfg.model.max_seq_len),
        collate_fn=make_collate(scfg.model.max_seq_len, max_stride(scfg)),
    )
    dets = student_detections(module, loader, use_ema)
    return ("student + EMA" if use_ema else "student"), proposals_to_results(dets, data.classes)


def evaluate_results(results: dict, data: StageData, tiou: Sequence[float]) -> dict[str, float]:
    """Detection mAP of a results dict on the test subset."""
    gt, video_ids = gt_to_detections(data.test_videos())
    pred = results_to_detections(results["results"], data.classes, video_ids)
    return detection_map(gt, pred, tiou, data.num_classes)


def run_student_stage(
    ctx: RunContext, data: StageData, pseudo: dict | None, upstream: Any
) -> dict[str, Any]:
    """Train (or reuse) the student on ``pseudo`` (filtered results; None = ground truth)."""
    cfg = ctx.cfg
    full = cfg.supervision == "full"
    sdir = stage_dir(
        ctx,
        "student",
        cfg.student,
        cfg.ema,
        cfg.supervision,
        upstream,
        cfg.features.student,
        dataset_identity(cfg),
        cfg.seed,
        trainer_identity(cfg),
    )
    with stage_lock(sdir) as reuse:
        if reuse:
            ctx.console.print(f"[green]student: reusing {sdir.path}[/green]")
        else:
            targets = None if full else results_to_targets(pseudo, data)
            _train_student(ctx, data, targets, sdir.path, full)
            fault_point("student", "written")
            if is_global_zero():
                sdir.commit(
                    ARTIFACTS,
                    {"student": to_plain(cfg.student), "ema": to_plain(cfg.ema), "seed": cfg.seed},
                )
    if is_global_zero():
        sdir.export(["student_test.json", "student_ema_test.json"], ctx.output_dir)
    metrics = read_json(sdir / "metrics.json")
    for key, value in metrics.items():
        ctx.record(key, value)
    return {"dir": sdir.path, "key": sdir.key}


def _train_student(
    ctx: RunContext, data: StageData, targets: dict | None, out: Path, full: bool
) -> None:
    cfg = ctx.cfg
    scfg = cfg.student
    ema_decay = cfg.ema.decay if cfg.ema.enabled else None
    if full:
        epochs, epochs_pseudo, schedule = scfg.full_epochs, scfg.full_epochs, scfg.full_schedule
    else:
        distill = scfg.epochs_distill if ema_decay is not None else 0
        epochs, epochs_pseudo, schedule = (
            scfg.epochs_pseudo + distill,
            scfg.epochs_pseudo,
            scfg.schedule,
        )
    dm = PseudoLabelDataModule(
        data,
        targets,
        scfg.model.max_seq_len,
        max_stride(scfg),
        scfg.batch_size,
        scfg.eval_batch_size,
        cfg.num_workers,
        augment=to_plain(scfg.augment),
        seed=cfg.seed,
    )
    seed_stage(cfg.seed)
    module = StudentModule(
        feature_dim=feature_dim(data),
        num_classes=data.num_classes,
        model=to_plain(scfg.model),
        lr=scfg.lr,
        weight_decay=scfg.weight_decay,
        warmup_epochs=scfg.warmup_epochs,
        schedule=schedule,
        max_epochs=epochs,
        epochs_pseudo=epochs_pseudo,
        ema_decay=ema_decay,
        ema_warmup=bool(cfg.ema.warmup),
        teacher_score_thresh=cfg.ema.score_thresh,
        video_loss_weight=scfg.video_loss_weight,
        inference=to_plain(scfg.inference),
        classes=data.classes,
        feature_timing=feature_timing(data),
    )
    ckpt = LastCheckpoint(out / "checkpoints" / "last.ckpt")
    trainer = make_trainer(
        cfg,
        "student",
        [ckpt, BatchReseed(cfg.seed)],
        max_epochs=epochs,
        gradient_clip_val=scfg.gradient_clip_val,
    )
    last = ckpt.path
    if last.is_file():
        ctx.console.print(f"student: resuming from {last}")
    trainer.fit(module, datamodule=dm, ckpt_path=str(last) if last.is_file() else None)
    fault_point("student", "fitted")
    tmp = out / ".student.ckpt.tmp"
    trainer.save_checkpoint(tmp)
    if is_global_zero():
        os.replace(tmp, out / "student.ckpt")
    # Lightning moves the module to the CPU after fit: evaluate on the training device
    module.to(trainer.strategy.root_device).eval()
    tiou = list(cfg.dataset.tiou_thresholds)
    metrics = {}
    variants = [("student", False)] + ([("student_ema", True)] if ema_decay is not None else [])
    for name, use_ema in variants:
        dets = gather_dict(student_detections(module, dm.predict_loader("test"), use_ema))
        if not is_global_zero():
            continue
        results = proposals_to_results(dets, data.classes)
        write_json(out / f"{name}_test.json", results)
        metrics[f"{name}.test"] = evaluate_results(results, data, tiou)
    if is_global_zero():
        if ema_decay is None:
            write_json(out / "student_ema_test.json", {"results": {}})
        write_json(out / "metrics.json", metrics)


def pseudo_label_file_key(path: Path) -> str:
    """Identity of a user-given pseudo-label file (its content hash)."""
    if not path.is_file():
        raise FustalError(f"pseudo_labels: file not found: {path}")
    return file_digest(path)
