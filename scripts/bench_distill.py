"""Benchmark: the cost of an EMA-distillation epoch against a pseudo-label epoch, on the embedded
synthetic default (the student stage of ``python -m fustal.train``), in one run.

    python scripts/bench_distill.py [--threads 1] [--out docs/benchmarks/distill.json]

The student is built from the composed default config (``scale=tiny``) and trained by a real
``pl.Trainer`` for its ``student.epochs_pseudo`` + ``student.epochs_distill`` epochs on the
training ground truth of the synthetic default (an epoch costs the same whatever its targets;
the teacher is the one trained in this run). Every training epoch's wall time is recorded
(no validation); the first
pseudo-label epoch (warm-up) is left out of the mean. Then the same distillation epochs run once
more, from the checkpoint at the switch, with the research-style teacher (soft-NMS of every
candidate, then the score threshold) in place of fustal's (soft-NMS of the candidates above the
threshold only), for the side-by-side cost of the teacher. Target: distillation / pseudo-label
<= 1.15.
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fustal.config import CONFIG_DIR, register_resolvers  # noqa: E402
from fustal.data.views import load_pipeline_data  # noqa: E402
from fustal.io import write_json  # noqa: E402
from fustal.pipeline.stages.common import seed_stage  # noqa: E402
from fustal.student.build import student_datamodule, student_module  # noqa: E402
from fustal.student.decode import SegmentBatch  # noqa: E402
from fustal.student.model import TriDet  # noqa: E402
from fustal.student.module import StudentModule  # noqa: E402
from fustal.training.quiet import quiet_libraries  # noqa: E402
from scripts.bench_common import research_teacher_targets  # noqa: E402

TARGET_RATIO = 1.15


class EpochTimer(pl.Callback):
    """Wall seconds of every training epoch that ran batches (a run resumed from an epoch-end
    checkpoint first closes that epoch without any)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.start = 0.0
        self.batches = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start, self.batches = time.perf_counter(), 0

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.batches += 1

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.batches:
            self.times.append(time.perf_counter() - self.start)


class ResearchTeacherStudent(StudentModule):
    """The student with the research-style teacher: soft-NMS of every candidate, then the
    threshold (or each video's single best detection)."""

    @torch.no_grad()
    def teacher_targets(self, batch: dict) -> SegmentBatch:
        assert self.ema is not None
        net = cast(TriDet, self.ema.module)
        was_training = net.training
        net.eval()
        try:
            output = net(batch["features"], batch["mask"])
            cands = net.candidates(output, self.decoding)
        finally:
            net.train(was_training)
        thresh = self.hp.teacher_score_thresh
        return research_teacher_targets(cands, net.num_classes, thresh, self.decoding)


def build(cfg: Any, data: Any, cls: type[StudentModule]) -> tuple[StudentModule, Any]:
    """The student stage's module (as ``cls``) and DataModule from the composed config, the
    training ground truth as targets."""
    scfg = cfg.student
    seed_stage(cfg.seed)
    module = student_module(
        scfg.module,
        data,
        cfg.dataset.tiou_thresholds,
        target=cls,
        max_epochs=scfg.epochs_pseudo + scfg.epochs_distill,
        epochs_pseudo=scfg.epochs_pseudo,
    )
    return module, student_datamodule(scfg.data, data, module.model, cfg.seed)


def trainer(max_epochs: int, timer: EpochTimer, root: Path) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,  # training epochs only: no periodic test mAP
        use_distributed_sampler=False,
        gradient_clip_val=1.0,
        callbacks=[timer],
        default_root_dir=root,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "docs/benchmarks/distill.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    quiet_libraries()
    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["paths.output_dir=/tmp"])
    data = load_pipeline_data(cfg).student
    scfg = cfg.student

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        module, dm = build(cfg, data, StudentModule)
        timer = EpochTimer()
        fit = trainer(scfg.epochs_pseudo, timer, root)
        fit.fit(module, datamodule=dm)
        switch = root / "switch.ckpt"
        fit.save_checkpoint(switch, weights_only=False)
        pseudo = timer.times
        runs: dict[str, list[float]] = {}
        for name, cls in (("fustal", StudentModule), ("research", ResearchTeacherStudent)):
            module, dm = build(cfg, data, cls)
            timer = EpochTimer()
            resumed = trainer(scfg.epochs_pseudo + scfg.epochs_distill, timer, root)
            resumed.fit(module, datamodule=dm, ckpt_path=str(switch))
            runs[name] = timer.times

    pseudo_mean = statistics.mean(pseudo[1:])
    result = {
        "benchmark": "distillation epoch vs pseudo-label epoch, synthetic default (scale=tiny)",
        "settings": {
            "threads": args.threads,
            "epochs_pseudo": scfg.epochs_pseudo,
            "epochs_distill": scfg.epochs_distill,
            "batch_size": scfg.data.batch_size,
            "train_videos": len(data.train_videos()),
        },
        "machine": {"python": platform.python_version(), "torch": torch.__version__},
        "pseudo_epoch_s": pseudo,
        "distill_epoch_s": runs,
        "pseudo_epoch_mean_s": pseudo_mean,
        "distill_epoch_mean_s": {k: statistics.mean(v) for k, v in runs.items()},
        "ratio": {k: statistics.mean(v) / pseudo_mean for k, v in runs.items()},
        "target_ratio": TARGET_RATIO,
    }
    write_json(args.out, result)
    print("| epoch | mean s | / pseudo-label epoch |")
    print("|---|---|---|")
    print(f"| pseudo labels | {pseudo_mean:.2f} | 1.00 |")
    for name, times in runs.items():
        print(
            f"| distillation, {name} teacher | {statistics.mean(times):.2f} "
            f"| {result['ratio'][name]:.2f} |"
        )
    print(f"\ntarget <= {TARGET_RATIO}; wrote {args.out}")


if __name__ == "__main__":
    main()
