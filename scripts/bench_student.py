"""Benchmark: stage-3 student training throughput, plain PyTorch loop vs ``pl.Trainer``.

    python scripts/bench_student.py [--steps 3] [--warmup 2] [--rounds 3] [--small]
        [--device cpu|cuda] [--batch-size B] [--threads 1] [--out docs/benchmarks/student.json]

The same :class:`fustal.student.module.StudentModule` (same seed, same synthetic batches) is
trained twice per round: by a plain loop (``training_step``, ``backward``, gradient clipping at
L2 norm 1.0, the optimizer and per-step lr schedule of ``configure_optimizers``, EMA update after
each optimizer step, as the module does) and by a real ``pl.Trainer`` fit. Measurements alternate
(loop, lightning, loop, lightning, ...) to spread drift over both; each starts from a fresh
module with ``--warmup`` untimed steps (at least 1) followed by ``--steps`` timed ones; a
throwaway loop of ``--warmup`` steps before them absorbs one-time process costs. A step's time is
the gap between the ends of consecutive steps (data fetch and all per-step framework work
included). Both runs must do the same work: per-step losses and the final EMA weights of the two
are compared and reported.

Reported: median seconds/step over all timed steps, videos/s, peak memory and Lightning's
overhead ratio, on wall-clock and on process CPU time (robust to other processes where
intra-op threads do not outnumber the free cores). Default shape is THUMOS'14: D 2048, T 2304,
20 classes, default TriDet, batch 2 (8 on CUDA).

``--threads`` defaults to 1: on a 2-core machine shared with other jobs, 2 OpenMP threads spin at
every barrier while one of them is descheduled; ``--small`` steps measured 0.06-7.5 s that way
(CPU time tracking wall time), against a steady 0.08 s with one thread. Use ``--threads 2`` on an
idle machine.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import inspect
import logging
import os
import platform
import re
import resource
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fustal.errors import FustalError, exit_on_error  # noqa: E402
from fustal.io import write_json  # noqa: E402
from fustal.student.assign import pad_segments  # noqa: E402
from fustal.student.model import TriDet  # noqa: E402
from fustal.student.module import StudentModule  # noqa: E402
from fustal.training.quiet import quiet_libraries  # noqa: E402

DEFAULT_OUT = ROOT / "docs/benchmarks/student.json"
CONFIGS: dict[str, dict[str, Any]] = {
    "thumos14": {"feature_dim": 2048, "seq_len": 2304, "num_classes": 20, "model": {}},
    "small": {
        "feature_dim": 64,
        "seq_len": 256,
        "num_classes": 20,
        "model": {
            "embd_dim": 64,
            "fpn_dim": 64,
            "head_dim": 64,
            "arch": [2, 2, 3],
            "regression_ranges": [[0, 4], [4, 8], [8, 16], [16, 10000]],
        },
    },
}
DEFAULT_STEPS = {"thumos14": 3, "small": 10}
DEFAULT_BATCH = {"cpu": 2, "cuda": 8}
GRAD_CLIP = 1.0
TARGET_KEYS = ("segments", "labels", "target_valid")
OVERHEAD_TARGET = 0.05
# besides fustal's own filter (fustal.training.quiet): what this bench's setup triggers
QUIET_WARNINGS = (
    r".*`self\.trainer` reference is not registered.*",
    r".*Tensor Cores.*",
    r".*too few batches.*",
)


def synthetic_batches(
    num_distinct: int,
    batch_size: int,
    feature_dim: int,
    seq_len: int,
    num_classes: int,
    seed: int,
    min_fill: float = 0.75,
    max_segments: int = 4,
    max_segment_frac: float = 0.1,
) -> list[dict[str, Any]]:
    """``num_distinct`` collated training batches of random videos.

    Each video: ``features [D, T]`` (Gaussian, zero past its length, which is drawn from
    ``[min_fill * T, T]``), ``mask [T]``, 1..``max_segments`` random segments (grid units, at
    most ``max_segment_frac`` of the length each) with random labels, multi-hot video labels.
    """
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for b in range(num_distinct):
        lengths = torch.randint(int(min_fill * seq_len), seq_len + 1, (batch_size,), generator=gen)
        mask = torch.arange(seq_len)[None, :] < lengths[:, None]
        features = torch.randn(batch_size, feature_dim, seq_len, generator=gen) * mask[:, None]
        segments, labels = [], []
        video_labels = torch.zeros(batch_size, num_classes)
        for row, length in enumerate(lengths.tolist()):
            count = int(torch.randint(1, max_segments + 1, (1,), generator=gen))
            width = 1.0 + torch.rand(count, generator=gen) * max_segment_frac * length
            start = torch.rand(count, generator=gen) * (length - width)
            segments.append(torch.stack([start, start + width], dim=1))
            labels.append(torch.randint(0, num_classes, (count,), generator=gen))
            video_labels[row, labels[-1]] = 1.0
        batches.append(
            {
                "features": features,
                "mask": mask,
                **dict(zip(TARGET_KEYS, pad_segments(segments, labels), strict=True)),
                "video_labels": video_labels,
                "video_id": [f"b{b}v{i}" for i in range(batch_size)],
            }
        )
    return batches


def make_loader(batches: list[dict[str, Any]], num_steps: int) -> DataLoader:
    """An in-memory loader of ``num_steps`` pre-collated batches (cycling ``batches``); it has
    its own generator, so iterating it does not draw from the global torch RNG."""
    items = [batches[i % len(batches)] for i in range(num_steps)]
    return DataLoader(items, batch_size=None, shuffle=False, generator=torch.Generator())


def batch_to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Tensors and lists of tensors of ``batch`` moved to ``device``."""

    def move(value: Any) -> Any:
        if isinstance(value, Tensor):
            return value.to(device)
        if isinstance(value, list) and all(isinstance(v, Tensor) for v in value):
            return [v.to(device) for v in value]
        return value

    return {key: move(value) for key, value in batch.items()}


def stamp(device: torch.device) -> tuple[float, float]:
    """``(wall, process CPU)`` seconds now, after queued GPU work has finished."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter(), time.process_time()


class PeakMemory:
    """Peak memory of one measurement in MiB.

    CUDA: ``torch.cuda.max_memory_allocated`` (reset per measurement). CPU: the process's peak
    RSS (``VmHWM``), reset per measurement through ``/proc/self/clear_refs`` after freed heap is
    returned to the OS; where that is unavailable, ``ru_maxrss`` (the process-lifetime peak).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        libc_name = ctypes.util.find_library("c")
        self.libc = ctypes.CDLL(libc_name) if libc_name else None
        self.resettable = device.type == "cuda" or self._try_reset_rss()
        if device.type == "cuda":
            self.kind = "torch.cuda.max_memory_allocated, reset per measurement"
        elif self.resettable:
            self.kind = "peak RSS (VmHWM), reset per measurement via /proc/self/clear_refs"
        else:
            self.kind = "peak RSS of the process so far (ru_maxrss, not resettable)"

    def _try_reset_rss(self) -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
        except OSError:
            return False
        return "VmHWM" in Path("/proc/self/status").read_text()

    def current_mb(self) -> float:
        """Memory in use now: allocated CUDA memory or the process RSS (the peak so far where
        RSS cannot be reset)."""
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device) / 2**20
        if self.resettable:
            return _status_kib("VmRSS") / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def reset(self) -> None:
        """Free what can be freed, then restart the peak from the current level."""
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        if self.libc is not None and hasattr(self.libc, "malloc_trim"):
            self.libc.malloc_trim(0)
        if self.resettable:
            self._try_reset_rss()

    def peak_mb(self) -> float:
        """Peak since the last :meth:`reset`."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.resettable:
            return _status_kib("VmHWM") / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _status_kib(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status``."""
    match = re.search(rf"^{field}:\s+(\d+)\s+kB", Path("/proc/self/status").read_text(), re.M)
    if match is None:
        raise FustalError(f"/proc/self/status: no {field} field")
    return int(match.group(1))


@contextmanager
def standalone_trainer(module: StudentModule, num_batches: int, max_steps: int) -> Iterator[None]:
    """Attach a stand-in exposing what ``configure_optimizers`` reads from a Trainer (the
    values a ``pl.Trainer(max_steps=max_steps)`` on a ``num_batches`` loader would give)."""
    module.trainer = SimpleNamespace(
        estimated_stepping_batches=max_steps,
        num_training_batches=num_batches,
        accumulate_grad_batches=1,
        current_epoch=0,
    )
    try:
        yield
    finally:
        module.trainer = None


def ema_checksum(module: StudentModule) -> float:
    """Sum of the EMA copy's parameters (0 without EMA): equal runs give equal sums."""
    if module.ema is None:
        return 0.0
    return float(sum(p.detach().double().sum() for p in module.ema.parameters()))


def run_loop(
    module: StudentModule, loader: DataLoader, device: torch.device
) -> tuple[list[tuple[float, float]], list[float]]:
    """Train one pass over ``loader`` in plain PyTorch; returns end-of-step stamps and losses."""
    module.to(device).train()
    with standalone_trainer(module, len(loader), len(loader)):
        config = module.configure_optimizers()
    optimizer = config["optimizer"]
    scheduler = config["lr_scheduler"]["scheduler"]
    stamps, losses = [], []
    for index, batch in enumerate(loader):
        loss = module.training_step(batch_to_device(batch, device), index)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.model.parameters(), GRAD_CLIP)
        optimizer.step()
        if module.ema is not None:
            module.ema.update(module.model)
        scheduler.step()
        losses.append(loss.item())
        stamps.append(stamp(device))
    return stamps, losses


class StepStamps(pl.Callback):
    """Records the wall clock and the loss at the end of every training batch."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stamps: list[tuple[float, float]] = []
        self.losses: list[float] = []

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self.losses.append(float(outputs["loss"]))
        self.stamps.append(stamp(self.device))


def run_lightning(
    module: StudentModule, loader: DataLoader, device: torch.device
) -> tuple[list[tuple[float, float]], list[float]]:
    """Train one pass over ``loader`` with a real ``pl.Trainer``; stamps and losses per step.

    ``max_epochs=1`` (the same bound as ``max_steps`` here) is passed too: with ``max_steps``
    alone Lightning leaves ``num_training_batches`` unset when ``configure_optimizers`` runs.
    """
    timer = StepStamps(device)
    trainer = pl.Trainer(
        accelerator=device.type,
        devices=1,
        max_steps=len(loader),
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=GRAD_CLIP,
        callbacks=[timer],
    )
    trainer.fit(module, train_dataloaders=loader)
    if len(timer.stamps) != len(loader):
        raise FustalError(f"lightning: ran {len(timer.stamps)} of {len(loader)} steps")
    return timer.stamps, timer.losses


def build_module(config: dict[str, Any], seed: int) -> StudentModule:
    """A freshly initialised student (same weights for the same ``seed``)."""
    torch.manual_seed(seed)
    model = {**config["model"], "max_seq_len": config["seq_len"]}
    return StudentModule(config["feature_dim"], config["num_classes"], net=model)


def measure(
    runner: Callable[..., tuple[list[tuple[float, float]], list[float]]],
    args: argparse.Namespace,
    batches: list[dict[str, Any]],
    memory: PeakMemory,
) -> dict[str, Any]:
    """One measurement on ``memory.device``: fresh module, ``args.warmup + args.steps`` steps,
    the last ``args.steps`` timed in wall-clock and process CPU seconds (``warmup >= 1``)."""
    memory.reset()
    baseline = memory.current_mb()
    module = build_module(CONFIGS[args.name], args.seed)
    loader = make_loader(batches, args.warmup + args.steps)
    stamps, losses = runner(module, loader, memory.device)
    timed = stamps[args.warmup - 1 :]
    gaps = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(timed[:-1], timed[1:], strict=True)]
    result = {
        "step_s": [wall for wall, _ in gaps],
        "step_cpu_s": [cpu for _, cpu in gaps],
        "losses": losses,
        "ema_checksum": ema_checksum(module),
        "baseline_memory_mb": baseline,
        "peak_memory_mb": memory.peak_mb(),
    }
    del module
    return result


def summarize(runs: list[dict[str, Any]], batch_size: int) -> dict[str, Any]:
    """Median wall and CPU seconds/step over every timed step of ``runs``, videos/s (wall)
    and peak memory."""
    steps = [s for run in runs for s in run["step_s"]]
    cpu_steps = [s for run in runs for s in run["step_cpu_s"]]
    median = statistics.median(steps)
    return {
        "median_s_per_step": median,
        "videos_per_s": batch_size / median,
        "median_cpu_s_per_step": statistics.median(cpu_steps),
        "peak_memory_mb": max(run["peak_memory_mb"] for run in runs),
        "peak_above_start_mb": max(
            run["peak_memory_mb"] - run["baseline_memory_mb"] for run in runs
        ),
        "baseline_memory_mb": [run["baseline_memory_mb"] for run in runs],
        "round_median_s": [statistics.median(run["step_s"]) for run in runs],
        "step_s": steps,
        "step_cpu_s": cpu_steps,
        "losses": [run["losses"] for run in runs],
        "ema_checksum": [run["ema_checksum"] for run in runs],
    }


def device_info(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu_model = re.search(r"^model name\s*:\s*(.+)$", _read("/proc/cpuinfo"), re.M)
    info = {
        "type": device.type,
        "cpu": cpu_model.group(1) if cpu_model else platform.processor(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        info["gpu"] = "none used" if torch.cuda.is_available() else "no GPU available here"
    return info


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def effective_model_config(module: StudentModule) -> dict[str, Any]:
    """TriDet keyword arguments in effect: its defaults overridden by the module's."""
    params = inspect.signature(TriDet).parameters.values()
    defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    net = dict(module.hp.net or {})
    net.pop("_target_", None)
    merged = {**defaults, **net}
    return {k: list(map(list, v)) if k == "regression_ranges" else v for k, v in merged.items()}


def quiet_lightning() -> None:
    """Silence Lightning's per-fit info lines and the warnings this setup triggers on purpose."""
    quiet_libraries()
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


RUNNERS = {"loop": run_loop, "lightning": run_lightning}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, with ``name`` (the config), ``steps`` and ``batch_size`` resolved."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="smoke config: D 64, T 256, embd 64")
    parser.add_argument("--steps", type=int, help="timed steps per measurement (3; small: 10)")
    parser.add_argument("--rounds", type=int, default=3, help="loop/lightning measurement pairs")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per measurement")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--batch-size", type=int, help="videos per batch (cpu 2, cuda 8)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (see module docstring)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    args.name = "small" if args.small else "thumos14"
    args.steps = args.steps if args.steps is not None else DEFAULT_STEPS[args.name]
    args.batch_size = args.batch_size or DEFAULT_BATCH[args.device]
    if min(args.steps, args.warmup, args.rounds, args.batch_size, args.threads) < 1:
        raise FustalError("arguments: steps, warmup, rounds, batch size, threads must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise FustalError("--device cuda: no CUDA device available on this machine")
    return args


def measure_rounds(args: argparse.Namespace, memory: PeakMemory) -> dict[str, dict[str, Any]]:
    """Summaries (:func:`summarize`) of ``args.rounds`` alternating measurements per runner,
    after one throwaway loop of ``args.warmup`` steps."""
    config, device = CONFIGS[args.name], memory.device
    sizes = (config["feature_dim"], config["seq_len"], config["num_classes"])
    batches = synthetic_batches(2, args.batch_size, *sizes, args.seed)
    run_loop(build_module(config, args.seed), make_loader(batches, args.warmup), device)
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key in RUNNERS}
    for _ in range(args.rounds):
        for key, runner in RUNNERS.items():
            runs[key].append(measure(runner, args, batches, memory))
    return {key: summarize(value, args.batch_size) for key, value in runs.items()}


def print_summary(result: dict[str, Any], args: argparse.Namespace) -> None:
    """The measurements as a Markdown table and one line of context."""
    config = CONFIGS[args.name]
    ratio, cpu_ratio = result["lightning_over_loop"], result["lightning_over_loop_cpu_time"]
    rows = [("plain loop", result["loop"]), ("pl.Trainer", result["lightning"])]
    table = "\n".join(
        f"| {label} | {r['median_s_per_step']:.3f} | {r['median_cpu_s_per_step']:.3f} "
        f"| {r['videos_per_s']:.3f} | {r['peak_memory_mb']:.0f} | {r['peak_above_start_mb']:.0f} |"
        for label, r in rows
    )
    print(
        "| implementation | median s/step | median CPU s/step | videos/s | peak memory MB "
        "| above start MB |\n|---|---|---|---|---|---|\n"
        f"{table}\n\n"
        f"{args.name}: D {config['feature_dim']}, T {config['seq_len']}, batch {args.batch_size}, "
        f"{args.device} ({args.threads} threads); {args.rounds} x {args.steps} timed steps each; "
        f"Lightning / loop = {ratio:.3f} wall, {cpu_ratio:.3f} CPU time (overhead "
        f"{100 * (ratio - 1):+.1f}% / {100 * (cpu_ratio - 1):+.1f}%, target < "
        f"{100 * OVERHEAD_TARGET:.0f}%); max |loss diff| {result['max_abs_loss_diff']:.2e}; "
        f"wrote {args.out}"
    )


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    config, device = CONFIGS[args.name], torch.device(args.device)
    torch.set_num_threads(args.threads)
    quiet_lightning()
    started = time.perf_counter()
    load_before = os.getloadavg()
    memory = PeakMemory(device)
    results = measure_rounds(args, memory)
    loop, light = results["loop"], results["lightning"]
    ratio = light["median_s_per_step"] / loop["median_s_per_step"]
    cpu_ratio = light["median_cpu_s_per_step"] / loop["median_cpu_s_per_step"]
    losses = zip(loop["losses"], light["losses"], strict=True)
    checksums = zip(loop["ema_checksum"], light["ema_checksum"], strict=True)
    probe = build_module(config, args.seed)
    result = {
        "benchmark": "StudentModule training: plain PyTorch loop vs pl.Trainer (same run)",
        "config": {
            "name": args.name,
            **{key: config[key] for key in ("feature_dim", "seq_len", "num_classes")},
            "batch_size": args.batch_size,
            "model": effective_model_config(probe),
            "parameters": sum(p.numel() for p in probe.model.parameters()),
            "gradient_clip_val": GRAD_CLIP,
            "seed": args.seed,
        },
        "device": device_info(device),
        "torch": torch.__version__,
        "pytorch_lightning": pl.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "steps": {
            "timed_per_measurement": args.steps,
            "rounds": args.rounds,
            "untimed_warmup_per_measurement": args.warmup,
            "order": [key for _ in range(args.rounds) for key in RUNNERS],
        },
        "memory_kind": memory.kind,
        "loop": loop,
        "lightning": light,
        "lightning_over_loop": ratio,
        "overhead": ratio - 1.0,
        "lightning_over_loop_cpu_time": cpu_ratio,
        "overhead_cpu_time": cpu_ratio - 1.0,
        "overhead_target": OVERHEAD_TARGET,
        "max_abs_loss_diff": max(abs(a - b) for x, y in losses for a, b in zip(x, y, strict=True)),
        "max_abs_ema_checksum_diff": max(abs(a - b) for a, b in checksums),
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "wall_s": time.perf_counter() - started,
    }
    write_json(args.out, result)
    print_summary(result, args)


if __name__ == "__main__":
    main()
