"""``python -m fustal.predict ckpt_path=CKPT features=DIR out=detections.json``: detections of a
saved checkpoint on new feature files, without annotations.

Usage::

    python -m fustal.predict ckpt_path=outputs/cache/student/<key>/student.ckpt \\
        features=/data/new_videos out=detections.json
    python -m fustal.predict ckpt_path=... features=DIR fps=30      # the videos' fps
    python -m fustal.predict ckpt_path=... features=DIR durations=durations.json

Every ``DIR/*.npy`` is one video: a ``[T, D]`` array in the feature layout the checkpoint was
trained on (for a generator: its streams concatenated, as it reads them), video id = file stem.
A student checkpoint predicts with its EMA weights when it has them (``use_ema=false``: the raw
ones); a generator checkpoint turns its CAS into proposals with its training settings. Videos
longer than the student's ``max_seq_len`` are run whole, as in the pipeline's evaluation.

Class names and feature timing (frames per window and stride, fps) come from the checkpoint;
``classes``, ``fps``, ``stride_frames`` and ``window_frames`` override them. Detections are
clipped to each video's duration: ``durations=FILE`` (JSON ``{video_id: seconds}``) or the end of
its last feature window. The results file is written atomically; bad input (checkpoint, folder,
feature file) is one line ``error: ...`` and exit code 2, and leaves no results file.

``conf/predict.yaml`` holds the keys and defaults. It is served through Hydra's ConfigStore, not
composed from ``conf/``, so that ``features=DIR`` is a value (in ``conf/``, ``features`` is a
config group).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
import hydra.utils
import numpy as np
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from fustal.config import CONFIG_DIR, absolute_paths, make_console, register_resolvers
from fustal.errors import FustalError, exit_on_error

if TYPE_CHECKING:
    from fustal.data.dataset import StageData
    from fustal.inference import Checkpoint

register_resolvers()
CONFIG_NAME = "fustal_predict"
ConfigStore.instance().store(name=CONFIG_NAME, node=OmegaConf.load(CONFIG_DIR / "predict.yaml"))

SUBSET = "predict"
TIMING_KEYS = ("fps", "stride_frames", "window_frames")
SHOWN_VIDEOS = 10


def feature_files(folder: Path) -> list[Path]:
    """The ``*.npy`` files of ``folder``, sorted by name."""
    if not folder.exists():
        raise FustalError(f"features: folder not found: {folder}")
    if not folder.is_dir():
        raise FustalError(f"features: not a folder: {folder}")
    files = sorted(p for p in folder.glob("*.npy") if p.is_file())
    if not files:
        raise FustalError(f"features: no .npy feature files in {folder}")
    return files


def num_steps(path: Path, dim: int) -> int:
    """``T`` of a ``[T, dim]`` .npy file, read from its header."""
    try:
        shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
    except (ValueError, OSError, EOFError) as err:
        raise FustalError(f"{path}: not a readable .npy file ({err})") from None
    if len(shape) != 2 or shape[0] == 0:
        raise FustalError(f"{path}: expected a non-empty [T, D] array, got shape {shape}")
    if shape[1] != dim:
        raise FustalError(f"{path}: feature dimension {shape[1]}, the checkpoint takes {dim}")
    return int(shape[0])


def resolve_classes(cfg: DictConfig, ckpt: Checkpoint) -> list[str]:
    """``classes`` of the config, else of the checkpoint; one name per predicted class."""
    classes = [str(c) for c in cfg.classes] if cfg.classes is not None else ckpt.classes
    if classes is None:
        raise FustalError(
            f"{ckpt.path}: the checkpoint stores no class names (written before fustal stored"
            f" them); pass classes=[name,...] ({ckpt.num_classes} names in index order)"
        )
    if len(classes) != ckpt.num_classes:
        raise FustalError(
            f"classes: {len(classes)} names, the {ckpt.kind} predicts {ckpt.num_classes} classes"
        )
    return classes


def resolve_timing(cfg: DictConfig, ckpt: Checkpoint, console: Console) -> dict[str, Any]:
    """Layout, fps, stride and window frames: the config's where set, else the checkpoint's."""
    stored = ckpt.feature_timing or {}
    timing: dict[str, Any] = {
        k: cfg[k] if cfg[k] is not None else stored.get(k) for k in TIMING_KEYS
    }
    timing["layout"] = stored.get("layout", "overlap")
    if timing["layout"] == "resized":
        return timing
    missing = [k for k in TIMING_KEYS if timing[k] is None]
    if missing:
        raise FustalError(
            f"{ckpt.path}: the checkpoint stores no feature {' / '.join(missing)}; pass"
            f" {' '.join(f'{k}=...' for k in missing)}"
        )
    for key in TIMING_KEYS:
        timing[key] = positive_number(key, timing[key])
    if cfg.fps is None and stored.get("fps_varies"):
        console.print(
            f"[yellow]fps: assuming {timing['fps']:g}, the most common fps of the training"
            " dataset's videos (theirs vary); pass fps=... for other videos[/yellow]"
        )
    return timing


def positive_number(key: str, value: Any) -> float:
    """``value`` as a positive float, else a :class:`FustalError` naming ``key``."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (is_number and np.isfinite(value) and value > 0):
        raise FustalError(f"{key}: expected a positive number, got {value!r}")
    return float(value)


def read_durations(path: str | None) -> dict[str, float]:
    """``{video_id: seconds}`` from a JSON file (empty without one)."""
    if path is None:
        return {}
    from fustal.io import read_json

    data = read_json(Path(path).expanduser(), "durations file")
    if not isinstance(data, Mapping):
        raise FustalError(f"{path}: expected a JSON object {{video_id: seconds}}")
    out = {}
    for vid, value in data.items():
        out[str(vid)] = positive_number(f"{path}: video {vid}: duration", value)
    return out


def prediction_data(
    folder: Path,
    files: list[Path],
    classes: list[str],
    timing: Mapping[str, Any],
    feature_dim: int,
    durations: Mapping[str, float],
) -> StageData:
    """The feature files as a one-subset :class:`StageData` without ground truth, so that the
    pipeline's data modules and inference functions run on them unchanged."""
    from fustal.data.annotations import Annotations, Video
    from fustal.data.dataset import StageData
    from fustal.data.features import FeatureSpec

    spec = FeatureSpec(
        root=folder,
        layout=str(timing["layout"]),
        path="{video}.npy",
        window_frames=timing["window_frames"],
        stride_frames=timing["stride_frames"],
        fps=timing["fps"],
        dim=feature_dim,
    )
    videos = {}
    for path in files:
        vid, steps = path.stem, num_steps(path, feature_dim)
        duration = durations.get(vid)
        if duration is None and spec.layout == "resized":
            raise FustalError(
                f"{path}: the checkpoint's resized features need the video's duration; pass"
                " durations=FILE (JSON {video_id: seconds})"
            )
        if duration is None:
            duration = ((steps - 1) * spec.stride_frames + spec.window_frames) / spec.fps
        videos[vid] = Video(
            vid, SUBSET, float(duration), spec.fps, np.zeros((0, 2)), np.zeros(0, np.int64)
        )
    annotations = Annotations(classes, videos, source=str(folder), subsets=[SUBSET])
    return StageData(annotations, spec, SUBSET, SUBSET)


def predict_detections(cfg: DictConfig, ckpt: Checkpoint, data: StageData) -> dict:
    """Detections ``[K, 4]`` (class, score, start_s, end_s) per video through
    ``Trainer.predict``: the student's EMA weights when ``use_ema`` and the checkpoint has them,
    else its raw ones; a generator's proposals, clipped to the video's duration."""
    from fustal.data.generator_datamodule import GeneratorDataModule
    from fustal.data.student_datamodule import PseudoLabelDataModule
    from fustal.inference import predict_videos

    module = ckpt.module
    trainer = hydra.utils.instantiate(cfg.trainer, _convert_="all")
    if ckpt.kind == "student":
        dm = PseudoLabelDataModule(
            data,
            module.model.max_seq_len,
            module.model.max_stride,
            eval_batch_size=cfg.batch_size,
            num_workers=cfg.num_workers,
        )
        out = predict_videos(trainer, module, dm.loader("test"))
        return out["student_ema"] if cfg.use_ema and "student_ema" in out else out["student"]
    hp = module.hparams
    if hp.get("num_segments") is None or hp.get("proposals") is None:
        raise FustalError(
            f"{ckpt.path}: the generator checkpoint stores no proposal settings (written before"
            " fustal stored them); retrain it, or predict with a student checkpoint"
        )
    gdm = GeneratorDataModule(
        data, hp.num_segments, eval_batch_size=cfg.batch_size, num_workers=cfg.num_workers
    )
    proposals = predict_videos(trainer, module, gdm.loader("test"))["generator"]
    out = {}
    for video in data.test_videos():
        props = proposals[video.id].copy()
        props[:, 2:4] = np.clip(props[:, 2:4], 0.0, video.duration)
        out[video.id] = props[props[:, 3] > props[:, 2]]
    return out


def summary_table(data: StageData, detections: Mapping[str, np.ndarray], out: Path) -> Table:
    """Per video (the first few): duration, detection count and the best detection."""
    table = Table(title=f"fustal predict -> {out}")
    for col in ("video", "seconds", "detections", "best detection"):
        table.add_column(col, justify="left" if col in ("video", "best detection") else "right")
    videos = data.test_videos()
    for video in videos[:SHOWN_VIDEOS]:
        det = detections[video.id]
        best = "-"
        if len(det):
            c, score, start, end = det[int(np.argmax(det[:, 1]))]
            best = f"{data.classes[int(c)]} {score:.3f} [{start:.1f}, {end:.1f}] s"
        table.add_row(video.id, f"{video.duration:.1f}", str(len(det)), best)
    if len(videos) > SHOWN_VIDEOS:
        table.add_row(f"... {len(videos) - SHOWN_VIDEOS} more", "", "", "")
    return table


@exit_on_error
def run(cfg: DictConfig) -> dict:
    """Check the inputs, predict, write ``out``; return the results dict."""
    from fustal.inference import load_checkpoint
    from fustal.io import write_json
    from fustal.metrics.results import rows_to_results

    for key in ("ckpt_path", "features"):
        if OmegaConf.is_missing(cfg, key) or cfg[key] is None:
            raise FustalError(
                f"{key}: not set (python -m fustal.predict ckpt_path=CKPT features=DIR"
                " out=detections.json)"
            )
    out = Path(str(cfg.out)).expanduser()
    if out.is_dir():
        raise FustalError(f"out: {out} is a folder; name the results file (out=FILE.json)")
    console = make_console()
    ckpt = load_checkpoint(str(cfg.ckpt_path))
    console.print(f"predict: {ckpt.describe()}")
    folder = Path(str(cfg.features)).expanduser()
    files = feature_files(folder)
    classes = resolve_classes(cfg, ckpt)
    timing = resolve_timing(cfg, ckpt, console)
    data = prediction_data(
        folder, files, classes, timing, ckpt.feature_dim, read_durations(cfg.durations)
    )
    detections = predict_detections(cfg, ckpt, data)
    results = rows_to_results(detections, classes)
    write_json(out, results)
    console.print(summary_table(data, detections, out))
    total = sum(len(d) for d in detections.values())
    console.print(f"predict: {total} detections on {len(files)} videos written to {out}")
    return results


@hydra.main(version_base="1.3", config_path=None, config_name=CONFIG_NAME)
def main(cfg: DictConfig) -> None:
    absolute_paths(cfg, ("ckpt_path", "features", "out", "durations"))
    run(cfg)


if __name__ == "__main__":
    main()
