"""Benchmark: vectorized ``cas_to_proposals`` against the loop reference, same videos, same run.

Videos are synthetic: ``--steps`` CAS steps, ``--classes`` classes, 1-3 predicted classes. With
``--cas bumpy`` (default) each predicted class has 3-7 Gaussian bumps of 3-30 steps over low
noise, as a trained generator's CAS looks; ``--cas smooth`` is Gaussian-filtered noise through a
ReLU. Every video is checked for equal proposals (sorted, ``atol`` 1e-6) before timing. Times are
the median over ``--repeats``.

    python scripts/bench_proposals.py [--out docs/benchmarks/proposals.json]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fustal.io import write_json  # noqa: E402
from fustal.pseudo.proposals import cas_to_proposals  # noqa: E402
from tests.reference.proposals_loop import cas_to_proposals_loop  # noqa: E402


def synthetic_video(
    rng: np.random.Generator,
    steps: int,
    classes: int,
    smooth: float,
    original_steps: int,
    kind: str = "bumpy",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """``(cas [T, C], actionness [T], video_scores [C], seconds_per_step)`` of one fake video."""
    num_pred = int(rng.integers(1, 4))
    predicted = rng.choice(classes, num_pred, replace=False)
    scores = rng.uniform(0.0, 0.1, classes)
    scores[predicted] = rng.uniform(0.25, 0.6, num_pred)
    if kind == "bumpy":
        t = np.arange(steps)
        cas = np.abs(rng.normal(0.0, 0.05, (steps, classes)))
        for c in predicted:
            for _ in range(int(rng.integers(3, 8))):
                centre, width = rng.uniform(0, steps), rng.uniform(3, 30)
                cas[:, c] += rng.uniform(0.5, 3.0) * np.exp(-0.5 * ((t - centre) / width) ** 2)
    else:
        cas = np.maximum(gaussian_filter1d(rng.normal(size=(steps, classes)), smooth, axis=0), 0)
        cas *= 8.0
    seconds_per_step = 16 / 25 * original_steps / steps
    return cas, cas.sum(axis=1), scores, seconds_per_step


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn()`` in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def sort_rows(p: np.ndarray) -> np.ndarray:
    """Rows sorted by class, start, end, score."""
    return p[np.lexsort((p[:, 1], p[:, 3], p[:, 2], p[:, 0]))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs/benchmarks/proposals.json"))
    parser.add_argument("--videos", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=750)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--cas", choices=("bumpy", "smooth"), default="bumpy")
    parser.add_argument("--smooth", type=float, default=4.0, help="--cas smooth: sigma in steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    rows = []
    for video in range(args.videos):
        original_steps = int(rng.integers(args.steps, 3 * args.steps))
        inputs = synthetic_video(
            rng, args.steps, args.classes, args.smooth, original_steps, args.cas
        )
        fast = cas_to_proposals(*inputs)
        slow = cas_to_proposals_loop(*inputs)
        equal = fast.shape == slow.shape and bool(
            np.allclose(sort_rows(fast), sort_rows(slow), rtol=0, atol=1e-6)
        )
        t_fast = median_time(lambda inputs=inputs: cas_to_proposals(*inputs), args.repeats)
        t_loop = median_time(lambda inputs=inputs: cas_to_proposals_loop(*inputs), args.repeats)
        rows.append(
            {
                "video": video,
                "predicted_classes": int((inputs[2] >= 0.2).sum()),
                "proposals": len(fast),
                "equal": equal,
                "vectorized_s": t_fast,
                "loop_s": t_loop,
                "speedup": t_loop / t_fast,
            }
        )

    total_fast = sum(r["vectorized_s"] for r in rows)
    total_loop = sum(r["loop_s"] for r in rows)
    result = {
        "benchmark": "cas_to_proposals vs tests/reference/proposals_loop.py",
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "machine": {"python": platform.python_version(), "numpy": np.__version__},
        "videos": rows,
        "total_vectorized_s": total_fast,
        "total_loop_s": total_loop,
        "speedup": total_loop / total_fast,
        "all_equal": all(r["equal"] for r in rows),
    }
    write_json(args.out, result)

    print("| video | classes | proposals | equal | vectorized (ms) | loop (ms) | speedup |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['video']} | {r['predicted_classes']} | {r['proposals']} | {r['equal']} "
            f"| {1e3 * r['vectorized_s']:.1f} | {1e3 * r['loop_s']:.1f} | {r['speedup']:.1f}x |"
        )
    print(
        f"| total | | | {result['all_equal']} | {1e3 * total_fast:.1f} | {1e3 * total_loop:.1f} "
        f"| {result['speedup']:.1f}x |"
    )
    print(f"\nwritten: {args.out}")
    if not result["all_equal"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
