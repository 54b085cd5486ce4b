"""Benchmark: vectorized detection mAP vs the per-prediction loop reference.

    python scripts/bench_map.py [--per-video 1000] [--seed 0] [--out docs/benchmarks/map.json]

Ground truth: THUMOS'14 test subset of the WTAL ``gt.json`` (210 videos). Predictions: seeded
random, ``--per-video`` per video, a mix of jittered GT segments and random segments with random
classes, scores rounded so that ties occur. Both implementations run in the same process on the
same input; the script checks that their per-class APs agree and reports seconds and the ratio.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fustal.data.annotations import load_annotations  # noqa: E402
from fustal.errors import FustalError, exit_on_error  # noqa: E402
from fustal.io import write_json  # noqa: E402
from fustal.metrics.detection import Detections, detection_map  # noqa: E402
from fustal.metrics.results import gt_to_detections  # noqa: E402
from tests.reference.map_loop import detection_map_loop  # noqa: E402

DEFAULT_GT = ROOT / "data/annotations/thumos14/gt.json"
DEFAULT_OUT = ROOT / "docs/benchmarks/map.json"
TIOU = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
AGREEMENT_TOL = 1e-12


def random_predictions(
    gt: Detections,
    num_videos: int,
    num_classes: int,
    per_video: int,
    seed: int,
    jitter_fraction: float = 0.5,
    score_decimals: int = 3,
) -> Detections:
    """``per_video`` predictions per video: jittered GT (GT class) and random segments/classes."""
    rng = np.random.default_rng(seed)
    total = num_videos * per_video
    video = np.repeat(np.arange(num_videos), per_video)
    horizon = np.zeros(num_videos)
    np.maximum.at(horizon, gt.video, gt.segment[:, 1])
    length = rng.uniform(0.5, 15.0, total)
    start = rng.uniform(0.0, 1.0, total) * np.maximum(horizon[video] - length, 0.0)
    label = rng.integers(0, num_classes, total)
    jittered = rng.random(total) < jitter_fraction
    # Jittered copies of a random GT segment of the same video (videos without GT keep random).
    order = np.argsort(gt.video, kind="stable")
    first = np.searchsorted(gt.video[order], np.arange(num_videos))
    count = np.bincount(gt.video, minlength=num_videos)
    jittered &= count[video] > 0
    jit_video = video[jittered]
    offset = np.floor(rng.random(len(jit_video)) * count[jit_video]).astype(np.int64)
    pick = order[first[jit_video] + offset]
    gt_len = gt.segment[pick, 1] - gt.segment[pick, 0]
    centre = gt.segment[pick].mean(axis=1) + rng.normal(0.0, 0.2, len(pick)) * gt_len
    new_len = gt_len * np.exp(rng.normal(0.0, 0.3, len(pick)))
    start[jittered] = np.maximum(centre - new_len / 2, 0.0)
    length[jittered] = new_len
    label[jittered] = gt.label[pick]
    score = np.round(rng.random(total), score_decimals)
    return Detections(video, label, np.stack([start, start + length], axis=1), score)


def best_time(fn: Callable[[], dict[str, float]], repeats: int) -> tuple[float, dict[str, float]]:
    """Smallest wall time of ``repeats`` calls and the last result."""
    times, out = [], {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gt", type=Path, default=DEFAULT_GT)
    parser.add_argument("--subset", default="test")
    parser.add_argument("--per-video", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of ours (best kept)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    annotations = load_annotations(args.gt, clip_to_duration=False)
    gt, video_ids = gt_to_detections(annotations.subset(args.subset))
    num_classes = annotations.num_classes
    pred = random_predictions(gt, len(video_ids), num_classes, args.per_video, args.seed)

    ours_s, ours = best_time(lambda: detection_map(gt, pred, TIOU, num_classes), args.repeats)
    ref_s, ref = best_time(lambda: detection_map_loop(gt, pred, TIOU, num_classes), 1)
    max_diff = max(abs(ours[k] - ref[k]) for k in ref)
    if ours.keys() != ref.keys() or max_diff > AGREEMENT_TOL:
        raise FustalError(f"benchmark: vectorized and loop mAP disagree (max diff {max_diff:.3g})")
    result = {
        "benchmark": "detection_map (vectorized) vs detection_map_loop (reference)",
        "gt": str(args.gt),
        "subset": args.subset,
        "videos": len(video_ids),
        "gt_segments": len(gt),
        "predictions": len(pred),
        "tiou_thresholds": list(TIOU),
        "seed": args.seed,
        "ours_s": ours_s,
        "ours_repeats": args.repeats,
        "reference_s": ref_s,
        "speedup": ref_s / ours_s,
        "max_abs_map_diff": max_diff,
        "map": ours,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
    }
    write_json(args.out, result)
    print(
        f"| implementation | seconds | ratio |\n|---|---|---|\n"
        f"| loop reference | {ref_s:.3f} | 1.0 |\n"
        f"| vectorized (best of {args.repeats}) | {ours_s:.3f} | {ref_s / ours_s:.1f}x |\n\n"
        f"{len(pred):,} predictions, {len(gt):,} GT segments, {len(video_ids)} videos; "
        f"avg mAP {result['map']['avg']:.4f}; max |mAP diff| {max_diff:.2e}; wrote {args.out}"
    )


if __name__ == "__main__":
    main()
