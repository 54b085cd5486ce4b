"""How the ActivityNet recipe's detection-level fusion was chosen: the held-out (and, to confirm,
test) avg mAP of the student + EMA fused with the generator at the video level (the recipe's
earlier ``fusion=generator``) and at the detection level (``fusion=generator_detections``) for
several ``fusion.vote_tiou`` (at ``class_weight`` 0.5), then for several ``fusion.class_weight``
(at the chosen ``vote_tiou``), re-fused from the detections that runs of the video-level recipe
saved. No model runs again: the numbers come from files.

    python scripts/activitynet_variants.py --kinds weak --extra fusion=generator \\
        --out outputs/variants --cache outputs/variants/cache        # the runs it reads
    python scripts/fusion_choice.py --out outputs/variants --cache outputs/variants/cache

A video-level fused row has score ``sqrt(class_score * detection_score)`` and is emitted once per
top-2 class, so each segment's class-agnostic score is ``fused^2 / class_score`` (its first
occurrence); these rows are fused again with the generator's detections of the same video
(:func:`fustal.fusion.fuse_detections`), on the held-out videos (the stage cache's ``*_val.json``)
and on the test videos. ``--record`` writes ``docs/benchmarks/fusion_choice.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fustal.config.schema import FusionSchema  # noqa: E402
from fustal.data.views import load_pipeline_data  # noqa: E402
from fustal.fusion import DETECTION_FILE, SCORE_FILE, fuse_detections, read_score_file  # noqa: E402
from fustal.metrics.results import read_rows, score_rows  # noqa: E402
from fustal.pipeline.stages.generator import VAL_FILE  # noqa: E402

RECORD = ROOT / "docs" / "benchmarks" / "fusion_choice.json"
VOTE_TIOUS = (0.5, 0.6, 0.7, 1.0)
# the class weights tried at the chosen vote (the recipe's fusion.vote_tiou)
CLASS_WEIGHTS = (0.3, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85)
VOTE = FusionSchema().vote_tiou
MODEL = "student_ema"
# the generator stage's detections of the held-out and test videos
GENERATOR_FILES = {"val": VAL_FILE, "test": DETECTION_FILE}


def cache_entry(cache: Path, name: str, reference: Path) -> Path:
    """The stage-cache folder whose ``name`` is byte for byte the run's ``reference`` file."""
    wanted = reference.read_bytes()
    for folder in sorted(cache.iterdir()):
        if (folder / name).is_file() and (folder / name).read_bytes() == wanted:
            return folder
    raise SystemExit(f"{reference}: no entry of {cache} holds this file")


def class_agnostic(rows: np.ndarray, class_scores: np.ndarray) -> np.ndarray:
    """Video-level fused rows (sqrt rule) -> the detector's own rows, each segment once."""
    if not len(rows):
        return rows.reshape(0, 4)
    detection = rows[:, 1] ** 2 / class_scores[rows[:, 0].astype(np.int64)]
    _, first = np.unique(np.round(rows[:, 2:4], 6), axis=0, return_index=True)
    first = np.sort(first)
    return np.column_stack([np.zeros(len(first)), detection[first], rows[first, 2:4]])


def with_classes(rows: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Class-agnostic ``rows [K, 4]`` emitted once per class of ``classes`` (scores kept)."""
    return np.concatenate([np.column_stack([np.full(len(rows), c), rows[:, 1:]]) for c in classes])


def variant_scores(run: Path, cache: Path) -> dict[str, dict[str, float]]:
    """``{setting: {"val": avg, "test": avg}}`` (in %) of one weakly supervised run."""
    from omegaconf import OmegaConf

    from fustal.config import register_resolvers

    register_resolvers()
    cfg = OmegaConf.load(run / "config.yaml")
    if cfg.fusion.get("level", "video") != "video":
        raise SystemExit(f"{run}: not a run of video-level fusion (fusion=generator)")
    data = load_pipeline_data(cfg).student
    classes, tiou = data.classes, list(cfg.dataset.tiou_thresholds)
    generator = cache_entry(cache / "generator", DETECTION_FILE, run / DETECTION_FILE)
    student = cache_entry(cache / "student", f"{MODEL}_test.json", run / f"{MODEL}_test.json")
    out: dict[str, dict[str, float]] = {}
    for split in ("val", "test"):
        videos = data.val_videos() if split == "val" else data.test_videos()
        ids = [v.id for v in videos]
        scores = read_score_file(generator / SCORE_FILE, classes, ids)
        found = read_rows(generator / GENERATOR_FILES[split], classes, str(generator))
        fused = read_rows(student / f"{MODEL}_{split}.json", classes, str(student))
        own = {v: class_agnostic(fused[v], scores[v]) for v in ids}

        settings = {"generator": found, "video": fused}
        for vote in VOTE_TIOUS:
            settings[f"detections {vote}"] = {
                v: fuse_detections(own[v], found[v], vote) for v in ids
            }
        for weight in CLASS_WEIGHTS:
            settings[f"detections {VOTE}, class weight {weight}"] = {
                v: fuse_detections(own[v], found[v], VOTE, class_weight=weight) for v in ids
            }
        # diagnostics on the videos' own labels (nothing is chosen on them): each video's true
        # classes given to every student segment, and the generator's detections of them only
        true = {v.id: np.unique(v.labels) for v in videos}
        settings["diagnostic: student segments, true classes"] = {
            v: with_classes(own[v], true[v]) for v in ids
        }
        settings["diagnostic: generator, true classes only"] = {
            v: found[v][np.isin(found[v][:, 0], true[v])] for v in ids
        }
        for name, rows in settings.items():
            scored = score_rows(rows, videos, data.num_classes, tiou)
            out.setdefault(name, {})[split] = 100 * scored["avg"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "variants")
    parser.add_argument("--cache", type=Path, default=None, help="default: <out>/cache")
    parser.add_argument("--variants", default=None, help="comma-separated (default: all found)")
    parser.add_argument("--record", action="store_true", help=f"write {RECORD.name}")
    args = parser.parse_args()
    cache = args.cache or args.out / "cache"
    names = (
        args.variants.split(",")
        if args.variants
        else sorted(p.parent.name for p in args.out.glob("*/weak"))
    )
    results: dict[str, Any] = {}
    for name in names:
        results[name] = variant_scores(args.out / name / "weak", cache)
    settings = list(next(iter(results.values())))
    print("| setting | " + " | ".join(names) + " | mean |")
    print("|---|" + "---|" * (len(names) + 1))
    for split in ("val", "test"):
        for setting in settings:
            values = [results[n][setting][split] for n in names]
            cells = " | ".join(f"{v:.1f}" for v in values)
            print(f"| {setting} ({split}) | {cells} | {np.mean(values):.1f} |")
    if args.record:
        RECORD.write_text(json.dumps({"model": MODEL, "variants": results}, indent=1) + "\n")
        print(f"wrote {RECORD}")


if __name__ == "__main__":
    main()
