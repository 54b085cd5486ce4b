"""Benchmark: the paper-scale path (THUMOS'14 sizes, METHOD.md configuration), fustal against the
research-style path in the same run, and the projected wall time of the whole paper schedule.

    python scripts/bench_paper.py [--device cpu|cuda] [--generator-steps 2] [--student-steps 2]
        [--eval-videos 8] [--threads N] [--out docs/benchmarks/paper_cpu.json]

Data: the bundled THUMOS'14 annotations (200 validation videos for training, 212 test videos, their
real durations, fps and segments) with random D = 2048 features of each video's real length in
both layouts (generator: 16 frames at 25 fps per step, resampled to 750; student: 16-frame
windows every 4 frames at the video's fps). Models at the METHOD.md sizes (generator hidden 2048,
TriDet 512-d, max_seq_len 2304, 20 classes).

Timed, each after one untimed warm-up:

- ``generator_step``: one training step (batch 16 x 750 steps);
- ``stage1_eval_per_video``: the generator's forward pass plus proposals of one test video. The
  proposals run on a CAS shaped like a trained generator's (3-7 bumps per predicted class over
  low noise, the video's own length) since a random network's CAS is noise; fustal's
  ``cas_to_proposals`` against the loop transcription of the research procedure
  (``tests/reference/proposals_loop.py``) on the same CAS;
- ``student_step``: one step on pseudo labels (batch 8 x 2304, the videos' annotated segments);
- ``distill_step``: the EMA teacher's forward pass and target selection plus one student step on
  its targets; fustal's teacher (soft-NMS of the candidates above 0.4 only) against the
  research-style teacher (soft-NMS of every candidate, then the threshold);
- ``test_inference_per_video``: forward, decoding and soft-NMS of one test video, one video at
  a time as in the paper configuration (``--eval-batch-size N`` times fustal in batches of N
  against the one-by-one research-style path).

A random TriDet scores every point near its prior (0.01), so the teacher and the inference decode
class logits shaped like a trained model's (N(-7, 1.5^2), raised to about +2 around the video's
annotated segments at the pyramid level that regresses them) on the network's real boundary and
offset outputs.

The projection multiplies the measured times by the paper schedule: 6000 generator steps with a
test evaluation every 100 (60 evaluations over 212 videos), pseudo labels of the 200 training
videos, 61 + 40 student epochs of 25 steps, and two final test passes (student, EMA). On a CPU
the per-video passes are measured on ``--eval-videos`` videos and scaled to the full sets.
"""

from __future__ import annotations

import argparse
import math
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fustal.data.annotations import Video, load_annotations  # noqa: E402
from fustal.data.features import Timing, resample_indices, seconds_to_grid  # noqa: E402
from fustal.generator.module import GeneratorModule  # noqa: E402
from fustal.io import write_json  # noqa: E402
from fustal.pseudo.proposals import cas_to_proposals  # noqa: E402
from fustal.student.assign import pad_segments  # noqa: E402
from fustal.student.decode import (  # noqa: E402
    SegmentBatch,
    soft_nms_batch,
    teacher_targets,
)
from fustal.student.ema import ModelEMA  # noqa: E402
from fustal.student.model import TriDet, TriDetOutput  # noqa: E402
from fustal.student.module import StudentModule  # noqa: E402
from scripts.bench_common import research_teacher_targets  # noqa: E402
from tests.reference.proposals_loop import cas_to_proposals_loop  # noqa: E402

ANNOTATIONS = ROOT / "data/annotations/thumos14/thumos14.json"
FEATURE_DIM, NUM_CLASSES = 2048, 20
GEN_FPS, GEN_FRAMES = 25.0, 16
STU_WINDOW, STU_STRIDE = 16, 4
SCHEDULE = {
    "generator_steps": 6000,
    "val_every": 100,
    "test_videos": 212,
    "train_videos": 200,
    "epochs_pseudo": 61,
    "epochs_distill": 40,
    "student_batch": 8,
    "generator_batch": 16,
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """Wall seconds of ``fn()`` (queued GPU work included) and its result."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generator_length(video: Video) -> int:
    return max(1, int(video.duration * GEN_FPS / GEN_FRAMES))


def student_length(video: Video) -> int:
    frames = video.duration * video.fps
    return max(1, int((frames - STU_WINDOW) // STU_STRIDE) + 1)


def student_timing(video: Video) -> Timing:
    return Timing(STU_STRIDE / video.fps, STU_WINDOW / video.fps)


def bumpy_cas(rng: np.random.Generator, steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(cas [T, C], actionness [T], video_scores [C])`` shaped like a trained generator's."""
    t = np.arange(steps)
    cas = np.abs(rng.normal(0.0, 0.05, (steps, NUM_CLASSES)))
    num_pred = int(rng.integers(1, 3))
    predicted = rng.choice(NUM_CLASSES, num_pred, replace=False)
    scores = rng.uniform(0.0, 0.1, NUM_CLASSES)
    scores[predicted] = rng.uniform(0.25, 0.6, num_pred)
    for c in predicted:
        for _ in range(int(rng.integers(3, 8))):
            centre, width = rng.uniform(0, steps), rng.uniform(3, 30) * steps / 750
            cas[:, c] += rng.uniform(0.5, 3.0) * np.exp(-0.5 * ((t - centre) / width) ** 2)
    return cas, cas.sum(axis=1), scores


def trained_like_logits(
    output: TriDetOutput, targets: list[tuple[Tensor, Tensor]], model: TriDet
) -> None:
    """Replace ``output.cls_logits`` in place by logits shaped like a trained TriDet's."""
    gen = torch.Generator().manual_seed(0)
    for level, (logits, stride, rng) in enumerate(
        zip(output.cls_logits, model.strides, model.regression_ranges, strict=True)
    ):
        base = -7.0 + 1.5 * torch.randn(logits.shape, generator=gen)
        t = torch.arange(logits.shape[1], dtype=torch.float32) * stride
        for b, (segs, labels) in enumerate(targets):
            for (start, end), label in zip(segs.tolist(), labels.tolist(), strict=True):
                reach = 0.5 * (end - start)
                if not (rng[0] <= reach <= rng[1]) and level != len(model.strides) - 1:
                    continue
                centre, width = 0.5 * (start + end), max(0.25 * (end - start), stride)
                base[b, :, label] += 9.0 * torch.exp(-(((t - centre) / width) ** 2))
        output.cls_logits[level] = base.to(logits.device, logits.dtype)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(args.device)
        self.rng = np.random.default_rng(0)
        annotations = load_annotations(ANNOTATIONS)
        self.train = annotations.subset("validation")
        self.test = annotations.subset("test")
        self.results: dict[str, Any] = {}

    # ---------------------------------------------------------------- stage 1
    def generator(self) -> None:
        args, device = self.args, self.device
        torch.manual_seed(0)
        module = GeneratorModule(FEATURE_DIM, NUM_CLASSES).to(device)
        optimizer = module.configure_optimizers()
        batch_size, segments = SCHEDULE["generator_batch"], 750

        def step() -> None:
            labels = torch.zeros(batch_size, NUM_CLASSES, device=device)
            labels[torch.arange(batch_size), torch.randint(0, NUM_CLASSES, (batch_size,))] = 1
            batch = {
                "features": torch.randn(batch_size, segments, FEATURE_DIM, device=device),
                "labels": labels,
            }
            optimizer.zero_grad(set_to_none=True)
            with self.autocast():
                loss = module.training_step(batch, 0)
            loss.backward()
            optimizer.step()

        module.log = lambda *a, **k: None  # no Trainer attached: logging is a no-op here
        module.train()
        step()
        times = [timed(step, device)[0] for _ in range(args.generator_steps)]
        self.results["generator_step_s"] = statistics.median(times)

        module.eval()
        videos = self.test[: args.eval_videos]
        forward, fast, loop = [], [], []
        for video in videos:
            length = generator_length(video)
            idx = resample_indices(length, segments)
            feats = torch.randn(1, len(idx), FEATURE_DIM, device=device)
            with torch.no_grad():
                seconds, out = timed(lambda feats=feats: module(feats), device)
            _ = out.cas.cpu()
            forward.append(seconds)
            cas, act, scores = bumpy_cas(self.rng, len(idx))
            step_s = GEN_FRAMES / GEN_FPS * length / len(idx)
            inputs = (cas, act, scores, step_s)
            fast.append(timed(lambda a=inputs: cas_to_proposals(*a), device)[0])
            loop.append(timed(lambda a=inputs: cas_to_proposals_loop(*a), device)[0])
        self.results["stage1_forward_per_video_s"] = statistics.mean(forward)
        self.results["proposals_per_video_s"] = {
            "fustal": statistics.mean(fast),
            "research_loop": statistics.mean(loop),
            "ratio": statistics.mean(loop) / statistics.mean(fast),
        }

    # ---------------------------------------------------------------- stage 3
    def student_batch(self, videos: list[Video], max_len: int, crop: bool = True) -> dict[str, Any]:
        """Random features of each video's real length (cropped to ``max_len`` for training,
        whole for inference; padded to at least ``max_len``) with its annotated segments."""
        feats, segments, labels = [], [], []
        for video in videos:
            length = min(student_length(video), max_len) if crop else student_length(video)
            feats.append(torch.randn(FEATURE_DIM, length))
            grid = seconds_to_grid(video.segments, student_timing(video))
            inside = grid[:, 0] < length
            segments.append(torch.as_tensor(grid[inside], dtype=torch.float32))
            labels.append(torch.as_tensor(video.labels[inside]))
        width = max(max_len, max(f.shape[1] for f in feats))
        width = math.ceil(width / 32) * 32
        features = torch.zeros(len(videos), FEATURE_DIM, width)
        mask = torch.zeros(len(videos), width, dtype=torch.bool)
        for i, f in enumerate(feats):
            features[i, :, : f.shape[1]] = f
            mask[i, : f.shape[1]] = True
        video_labels = torch.zeros(len(videos), NUM_CLASSES)
        for i, lab in enumerate(labels):
            video_labels[i, lab] = 1.0
        segs, labs, valid = pad_segments(segments, labels)
        batch = {
            "features": features,
            "mask": mask,
            "segments": segs,
            "labels": labs,
            "target_valid": valid,
            "video_labels": video_labels,
        }
        return {k: v.to(self.device) for k, v in batch.items()}

    def student(self) -> None:
        args, device = self.args, self.device
        torch.manual_seed(0)
        module = StudentModule(FEATURE_DIM, NUM_CLASSES, epochs_pseudo=10**6).to(device)
        module.log_dict = lambda *a, **k: None  # no Trainer attached: logging is a no-op here
        model, ema = module.model, module.ema
        assert ema is not None
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def train_step(batch: dict[str, Any]) -> None:
            optimizer.zero_grad(set_to_none=True)
            with self.autocast():
                loss = module.training_step(batch, 0)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            ema.update(model)

        batches = [
            self.student_batch(
                [self.train[int(i)] for i in self.rng.choice(len(self.train), 8, replace=False)],
                model.max_seq_len,
            )
            for _ in range(args.student_steps + 1)
        ]
        model.train()
        train_step(batches[0])
        pseudo = [timed(lambda b=b: train_step(b), device)[0] for b in batches[1:]]
        self.results["student_step_s"] = statistics.median(pseudo)
        self.distillation(ema, train_step, batches)
        self.test_inference(model)

    def distillation(
        self, ema: ModelEMA, train_step: Callable[[dict[str, Any]], None], batches: list[dict]
    ) -> None:
        """Distillation steps and the EMA teacher alone: fustal's against the research-style."""
        device = self.device

        def teacher(batch: dict[str, Any], research: bool) -> SegmentBatch:
            net = ema.module.eval()
            with torch.no_grad(), self.autocast():
                output = net(batch["features"], batch["mask"])
            trained_like_logits(output, self.targets_of(batch), net)
            cands = net.candidates(output)
            if research:
                return research_teacher_targets(cands, NUM_CLASSES)
            return teacher_targets(cands, NUM_CLASSES)

        def distill_step(batch: dict[str, Any], research: bool) -> None:
            targets = teacher(batch, research)
            targeted = {"segments": targets.segments, "labels": targets.labels}
            train_step({**batch, **targeted, "target_valid": targets.valid})

        distill: dict[str, list[float]] = {"fustal": [], "research": []}
        teach: dict[str, list[float]] = {"fustal": [], "research": []}  # the teacher alone
        for name in ("fustal", "research"):
            research = name == "research"
            distill_step(batches[0], research)
            for b in batches[1:]:
                teach[name].append(timed(lambda b=b, r=research: teacher(b, r), device)[0])
                distill[name].append(timed(lambda b=b, r=research: distill_step(b, r), device)[0])
        median = {k: statistics.median(v) for k, v in distill.items()}
        self.results["distill_step_s"] = median | {"ratio": median["research"] / median["fustal"]}
        self.results["teacher_per_batch_s"] = {k: statistics.median(v) for k, v in teach.items()}

    def test_inference(self, model: TriDet) -> None:
        """Test inference, fustal in batches of --eval-batch-size (1 as in the paper: on a CPU,
        batching pads to the batch's longest video) against the research-style one by one."""
        model.eval()
        videos = self.test[: self.args.eval_videos]
        batch_size = self.args.eval_batch_size

        def infer(group: list[Video]) -> None:
            batch = self.student_batch(group, model.max_seq_len, crop=False)
            with torch.no_grad(), self.autocast():
                output = model(batch["features"], batch["mask"])
            trained_like_logits(output, self.targets_of(batch), model)
            cands = model.candidates(output)
            soft_nms_batch(cands, NUM_CLASSES).to_rows()

        infer(videos[:1])
        fast = sum(
            timed(lambda g=videos[i : i + batch_size]: infer(g), self.device)[0]
            for i in range(0, len(videos), batch_size)
        )
        # one video at a time is the paper configuration (student.data.eval_batch_size: 1)
        slow = (
            fast
            if batch_size == 1
            else sum(timed(lambda v=v: infer([v]), self.device)[0] for v in videos)
        )
        self.results["test_inference_per_video_s"] = {
            "fustal": fast / len(videos),
            "research_per_video": slow / len(videos),
            "ratio": slow / fast,
        }

    def autocast(self) -> torch.autocast:
        """bf16 autocast for the networks with ``--bf16`` (else disabled) on the bench device."""
        return torch.autocast(self.device.type, torch.bfloat16, enabled=self.args.bf16)

    @staticmethod
    def targets_of(batch: dict[str, Any]) -> list[tuple[Tensor, Tensor]]:
        return [
            (s[v].cpu(), lab[v].cpu())
            for s, lab, v in zip(
                batch["segments"], batch["labels"], batch["target_valid"], strict=True
            )
        ]

    # ---------------------------------------------------------------- projection
    def projection(self) -> dict[str, Any]:
        r, s = self.results, SCHEDULE
        evaluations = s["generator_steps"] // s["val_every"]
        steps_per_epoch = math.ceil(s["train_videos"] / s["student_batch"])
        out = {}
        for path in ("fustal", "research"):
            kind = "fustal" if path == "fustal" else "research_loop"
            proposals = r["proposals_per_video_s"][kind]
            per_video = r["stage1_forward_per_video_s"] + proposals
            distill = r["distill_step_s"][path]
            infer = r["test_inference_per_video_s"][
                "fustal" if path == "fustal" else "research_per_video"
            ]
            parts = {
                "generator_training_s": s["generator_steps"] * r["generator_step_s"],
                "generator_evaluations_s": evaluations * s["test_videos"] * per_video,
                "pseudo_label_export_s": s["train_videos"] * per_video,
                "student_pseudo_s": s["epochs_pseudo"] * steps_per_epoch * r["student_step_s"],
                "student_distill_s": s["epochs_distill"] * steps_per_epoch * distill,
                "test_inference_s": 2 * s["test_videos"] * infer,
            }
            parts["total_s"] = sum(parts.values())
            out[path] = parts
        out["ratio"] = out["research"]["total_s"] / out["fustal"]["total_s"]
        return out


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--generator-steps", type=int, default=2)
    parser.add_argument("--student-steps", type=int, default=2)
    parser.add_argument("--eval-videos", type=int, default=None, help="default: 8 (cpu), 212")
    parser.add_argument("--eval-batch-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for the networks")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.eval_videos is None:
        args.eval_videos = 8 if args.device == "cpu" else SCHEDULE["test_videos"]
    device_kind = "gpu" if args.device.startswith("cuda") else "cpu"
    out_path = Path(args.out or ROOT / f"docs/benchmarks/paper_{device_kind}.json")

    bench = Bench(args)
    started = time.perf_counter()
    bench.generator()
    bench.student()
    projection = bench.projection()
    device = torch.device(args.device)
    result = {
        "benchmark": "paper-scale path (THUMOS'14 sizes): fustal vs research-style, projected",
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "schedule": SCHEDULE,
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "threads": torch.get_num_threads(),
        },
        "measured": bench.results,
        "peak_memory_mb": peak_memory_mb(device),
        "projection": projection,
        "bench_wall_s": time.perf_counter() - started,
    }
    write_json(out_path, result)

    r = bench.results
    print("| measured | fustal | research-style | ratio |")
    print("|---|---|---|---|")
    print(f"| generator step (batch 16) | {r['generator_step_s']:.3f} s | same | 1.0 |")
    p = r["proposals_per_video_s"]
    print(
        f"| proposals per test video | {1e3 * p['fustal']:.1f} ms | "
        f"{1e3 * p['research_loop']:.1f} ms | {p['ratio']:.1f}x |"
    )
    print(f"| student step (batch 8) | {r['student_step_s']:.3f} s | same | 1.0 |")
    d = r["distill_step_s"]
    print(
        f"| distillation step (batch 8) | {d['fustal']:.3f} s | {d['research']:.3f} s "
        f"| {d['ratio']:.2f}x |"
    )
    t = r["test_inference_per_video_s"]
    print(
        f"| test inference per video | {1e3 * t['fustal']:.1f} ms | "
        f"{1e3 * t['research_per_video']:.1f} ms | {t['ratio']:.2f}x |"
    )
    f, rs = projection["fustal"], projection["research"]
    print(
        f"| projected paper schedule | {hours(f['total_s'])} | {hours(rs['total_s'])} "
        f"| {projection['ratio']:.2f}x |"
    )
    print(f"\npeak memory {result['peak_memory_mb']:.0f} MB; wrote {out_path}")


if __name__ == "__main__":
    main()
