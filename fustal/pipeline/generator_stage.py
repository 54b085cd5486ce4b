"""Stage 1: train the cross-video contrastive generator, then turn its CAS into proposals on the
training videos (pseudo labels) and the test videos (the generator's own detections)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import DataLoader

from fustal.config import arange_thresholds, to_plain
from fustal.data.annotations import Video
from fustal.data.dataset import StageData
from fustal.data.generator_datamodule import GeneratorDataModule, GeneratorVideos, collate_videos
from fustal.generator.module import GeneratorModule
from fustal.inference import feature_timing
from fustal.io import read_json, write_json
from fustal.metrics.quality import pseudo_label_quality
from fustal.metrics.results import gt_to_detections, proposals_to_results, results_to_detections
from fustal.metrics.torchmetric import DetectionMAP
from fustal.pipeline.context import (
    BatchReseed,
    LastCheckpoint,
    PeriodicEvaluation,
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
from fustal.pseudo.parallel import ProposalPool, resolve_workers

log = logging.getLogger(__name__)

ARTIFACTS = ["generator.ckpt", "pseudo_labels.json", "generator_test.json", "metrics.json"]


def proposal_params(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``generator.proposals`` config -> keyword arguments of :func:`cas_to_proposals`."""
    params = dict(to_plain(cfg))
    params["cas_thresholds"] = arange_thresholds(params["cas_thresholds"])
    params["actionness_thresholds"] = arange_thresholds(params["actionness_thresholds"])
    return params


@torch.no_grad()
def generator_outputs(
    module: GeneratorModule, loader: DataLoader
) -> Iterator[tuple[str, Tensor, Tensor, Tensor, float]]:
    """Per video of ``loader``: ``(video_id, cas [T, C], actionness [T], video_scores [C],
    seconds_per_step)`` on the CPU, padding removed."""
    for batch in loader:
        valid = batch["valid"].to(module.device)
        pred = module(batch["features"].to(module.device), valid=valid)
        cas, act, scores = pred.cas.cpu(), pred.actionness.cpu(), pred.video_scores.cpu()
        for i, vid in enumerate(batch["video_id"]):
            n = int(batch["valid"][i])
            yield vid, cas[i, :n], act[i, :n], scores[i], float(batch["seconds_per_step"][i])


def generator_proposals(
    module: GeneratorModule, loader: DataLoader, params: Mapping[str, Any], workers: int | str = 0
) -> dict[str, np.ndarray]:
    """Proposals ``[K, 4]`` (class, score, start_s, end_s) for every video of ``loader``
    (this rank's shard), computed in ``workers`` processes (see
    :func:`fustal.pseudo.parallel.resolve_workers`) while the next batch runs forward."""
    num_videos = len(loader.dataset) if isinstance(loader, DataLoader) else 0
    with ProposalPool(params, resolve_workers(workers, num_videos)) as pool:
        for vid, cas, act, scores, step_s in generator_outputs(module, loader):
            pool.submit(vid, cas.numpy(), act.numpy(), scores.numpy(), step_s)
        return pool.results()


def picture_cas(
    checkpoint: Path,
    data: StageData,
    videos: Sequence[Video],
    num_segments: int,
    device: torch.device,
) -> dict[str, dict[str, Any]]:
    """``{vid: {"cas" [T, C], "actionness" [T], "seconds_per_step"}}`` of the generator saved
    in ``checkpoint`` on ``videos`` (the CAS the pseudo labels of those videos come from)."""
    module = GeneratorModule.load_from_checkpoint(checkpoint, map_location=device).eval()
    loader = DataLoader(
        GeneratorVideos(data, videos, num_segments, train=False), collate_fn=collate_videos
    )
    return {
        vid: {"cas": cas.numpy(), "actionness": act.numpy(), "seconds_per_step": step_s}
        for vid, cas, act, _, step_s in generator_outputs(module, loader)
    }


def evaluate_generator(
    module: GeneratorModule,
    loader: DataLoader,
    videos: Sequence[Video],
    num_classes: int,
    tiou: Sequence[float],
    params: Mapping[str, Any],
    workers: int | str = 0,
) -> dict[str, float]:
    """Test mAP of the generator's proposals, accumulated per rank and synced by the metric."""
    gt, video_ids = gt_to_detections(videos)
    metric = DetectionMAP(gt, num_classes, tiou).to(module.device)
    props = generator_proposals(module, loader, params, workers)
    index = {vid: i for i, vid in enumerate(video_ids)}
    for vid, p in props.items():
        metric.update(
            torch.full((len(p),), index[vid], dtype=torch.long),
            torch.as_tensor(p[:, 0], dtype=torch.long),
            torch.as_tensor(p[:, 1], dtype=torch.float64),
            torch.as_tensor(p[:, 2:4], dtype=torch.float64),
        )
    return {k: float(v) for k, v in metric.compute().items()}


def score_results(
    results: dict, videos: Sequence[Video], classes: list[str], tiou: Sequence[float]
) -> dict[str, float]:
    """Pseudo-label quality (count, precision/recall@0.5, mAP) against ground truth."""
    gt, video_ids = gt_to_detections(videos)
    pred = results_to_detections(results["results"], classes, video_ids)
    return pseudo_label_quality(gt, pred, len(classes), tiou)


def feature_dim(data: StageData) -> int:
    return int(data.features.load(data.train_videos()[0]).shape[1])


def run_generator_stage(ctx: RunContext, data: StageData) -> dict[str, Any]:
    """Train (or reuse) the generator; write pseudo labels and test detections; return paths
    and metrics. Artifacts: generator.ckpt, pseudo_labels.json, generator_test.json."""
    cfg = ctx.cfg
    gcfg = cfg.generator
    sdir = stage_dir(
        ctx,
        "generator",
        gcfg,
        cfg.features.generator,
        dataset_identity(cfg),
        cfg.seed,
        trainer_identity(cfg),
    )
    tiou = list(cfg.dataset.tiou_thresholds)
    with stage_lock(sdir) as reuse:
        if reuse:
            ctx.console.print(f"[green]generator: reusing {sdir.path}[/green]")
        else:
            _train_generator(ctx, data, sdir.path, tiou)
            fault_point("generator", "written")
            if is_global_zero():
                sdir.commit(ARTIFACTS, {"generator": to_plain(gcfg), "seed": cfg.seed})
    if is_global_zero():
        sdir.export(["pseudo_labels.json", "generator_test.json"], ctx.output_dir)
    metrics = read_json(sdir / "metrics.json")
    ctx.record("generator.test", metrics["generator.test"])
    ctx.record("pseudo_labels.raw", metrics["pseudo_labels.raw"])
    ctx.record("generator.key", sdir.key)
    return {"dir": sdir.path, "pseudo_labels": sdir / "pseudo_labels.json", "key": sdir.key}


def generator_datamodule(cfg: DictConfig, data: StageData) -> GeneratorDataModule:
    """The stage-1 DataModule of ``data`` with the ``generator`` group's sizes."""
    gcfg = cfg.generator
    return GeneratorDataModule(
        data,
        gcfg.num_segments,
        gcfg.batch_size,
        gcfg.eval_batch_size,
        cfg.num_workers,
        seed=cfg.seed,
    )


def _train_generator(ctx: RunContext, data: StageData, out: Path, tiou: list[float]) -> None:
    cfg = ctx.cfg
    gcfg = cfg.generator
    dm = generator_datamodule(cfg, data)
    seed_stage(cfg.seed)
    module = GeneratorModule(
        feature_dim=feature_dim(data),
        num_classes=data.num_classes,
        hidden_dim=gcfg.hidden_dim,
        dropout=gcfg.dropout,
        r_easy=gcfg.r_easy,
        r_hard=gcfg.r_hard,
        m=gcfg.m,
        M=gcfg.M,
        mining_dropout=gcfg.mining_dropout,
        temperature=gcfg.temperature,
        contrast_weight=gcfg.contrast_weight,
        cross_video_weight=gcfg.cross_video_weight,
        cross_video=gcfg.cross_video,
        lr=gcfg.lr,
        betas=tuple(gcfg.betas),
        weight_decay=gcfg.weight_decay,
        classes=data.classes,
        feature_timing=feature_timing(data),
        num_segments=gcfg.num_segments,
        proposals=to_plain(gcfg.proposals),
    )
    params = proposal_params(gcfg.proposals)
    workers = gcfg.proposal_workers
    test_videos = dm.test_videos

    def evaluate(m: GeneratorModule) -> dict[str, float]:
        return evaluate_generator(
            m, dm.val_dataloader(), test_videos, data.num_classes, tiou, params, workers
        )

    steps_per_epoch = max(len(dm.train_dataloader()), 1)
    ckpt = LastCheckpoint(
        out / "checkpoints" / "last.ckpt",
        every_n_epochs=max(1, round(gcfg.val_every / steps_per_epoch)),
    )
    trainer = make_trainer(
        cfg,
        "generator",
        [
            ckpt,
            BatchReseed(cfg.seed),
            PeriodicEvaluation(evaluate, gcfg.val_every, "generator/test"),
        ],
        max_steps=gcfg.max_steps,
    )
    last = ckpt.path
    if last.is_file():
        ctx.console.print(f"generator: resuming from {last}")
    trainer.fit(module, datamodule=dm, ckpt_path=str(last) if last.is_file() else None)
    fault_point("generator", "fitted")
    tmp = out / ".generator.ckpt.tmp"
    trainer.save_checkpoint(tmp)
    if is_global_zero():
        os.replace(tmp, out / "generator.ckpt")
    # Lightning moves the module to the CPU after fit: evaluate on the training device
    module.to(trainer.strategy.root_device).eval()
    final_metrics = evaluate(module)
    pseudo = gather_dict(generator_proposals(module, dm.predict_loader("train"), params, workers))
    test_props = gather_dict(
        generator_proposals(module, dm.predict_loader("test"), params, workers)
    )
    if not is_global_zero():
        return
    pseudo_results = proposals_to_results(pseudo, data.classes)
    test_results = proposals_to_results(test_props, data.classes)
    quality = score_results(pseudo_results, dm.train_videos, data.classes, tiou)
    write_json(out / "pseudo_labels.json", pseudo_results)
    write_json(out / "generator_test.json", test_results)
    write_json(
        out / "metrics.json", {"generator.test": final_metrics, "pseudo_labels.raw": quality}
    )
