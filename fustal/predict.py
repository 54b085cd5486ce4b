"""``python -m fustal.predict ckpt_path=CKPT features=DIR out=detections.json``: detections of a
saved checkpoint on new feature files or video files, without annotations.

Usage::

    python -m fustal.predict ckpt_path=outputs/cache/student/<key>/student.ckpt \\
        features=/data/new_videos out=detections.json
    python -m fustal.predict ckpt_path=... features=DIR fps=30      # the videos' fps
    python -m fustal.predict ckpt_path=... features=DIR durations=durations.json

Every ``DIR/*.npy`` is one video: a ``[T, D]`` array in the feature layout the checkpoint was
trained on (for a generator: its streams concatenated, as it reads them), video id = file stem.
When ``DIR`` holds video files instead (``.mp4``, ``.avi``, ...), their features are extracted
first, as ``fustal.extract`` extracted the checkpoint's training features (its record is stored
in the checkpoint); a checkpoint trained on other features refuses them.

A student checkpoint predicts with its EMA weights when it has them (``use_ema=false``: the raw
ones); a generator checkpoint turns its CAS into proposals with its training settings. Videos
longer than the student's ``max_seq_len`` are run whole, as in the pipeline's evaluation.

Class names and feature timing (frames per window and stride, fps) come from the checkpoint;
``classes``, ``fps``, ``stride_frames`` and ``window_frames`` override them. Detections are
clipped to each video's duration: ``durations=FILE`` (JSON ``{video_id: seconds}``), the video
file's, or the end of its last feature window. Features that do not fit the checkpoint are
refused: a ``DIR/features.json`` sidecar describing other features (timing or extractor), a
duration that the features' steps at the checkpoint's step length cannot span (e.g. ActionFormer
features given to a generator trained on CoLA's 0.64 s steps), resized features of another
length. The results file is written atomically; bad input (checkpoint, folder, feature file) is
one line ``error: ...`` and exit code 2, and leaves no results file.

A student that takes its classes from video-level scores (``student.module.class_agnostic``, the
ActivityNet experiments) needs them for the new videos: ``fusion.source=generator
fusion.generator_ckpt=GENERATOR.ckpt`` runs that generator on the same videos
(``fusion.generator_features=DIR`` when its features are elsewhere), ``fusion.source=file
fusion.score_file=FILE`` reads them (:mod:`fustal.fusion`); without either it is refused in one
line. ``fusion.topk`` / ``fusion.rule`` default to the checkpoint's.

``conf/predict.yaml`` holds the keys and defaults. It is served through Hydra's ConfigStore, not
composed from ``conf/``, so that ``features=DIR`` is a value (in ``conf/``, ``features`` is a
config group).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import hydra
import hydra.utils
import numpy as np
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from fustal.config import CONFIG_DIR, absolute_paths, make_console, register_resolvers
from fustal.data.features import positive_number
from fustal.errors import FustalError, exit_on_error

if TYPE_CHECKING:
    from fustal.checkpoints import Checkpoint
    from fustal.data.dataset import StageData
    from fustal.student.model import TriDet

register_resolvers()
CONFIG_NAME = "fustal_predict"
ConfigStore.instance().store(name=CONFIG_NAME, node=OmegaConf.load(CONFIG_DIR / "predict.yaml"))

SUBSET = "predict"
# predict_detections' key of the detections
DETECTIONS = "detections"
TIMING_KEYS = ("fps", "stride_frames", "window_frames")
SHOWN_VIDEOS = 10
# a duration more than this factor beyond what the feature steps can span is another time scale
SPAN_TOLERANCE = 1.5


def feature_files(folder: Path) -> list[Path]:
    """The ``*.npy`` files of ``folder``, sorted by name."""
    return sorted(p for p in folder.glob("*.npy") if p.is_file())


def feature_folder(
    cfg: DictConfig, ckpt: Checkpoint, scratch: Path, console: Console
) -> tuple[Path, dict[str, float]]:
    """The folder of ``.npy`` features to predict on and the durations its video files give:
    ``features`` itself, or, when it holds video files, their features extracted into
    ``scratch`` as the checkpoint's training features were."""
    from fustal.extract.decode import video_files

    folder = Path(str(cfg.features)).expanduser()
    if not folder.exists():
        raise FustalError(f"features: folder not found: {folder}")
    if not folder.is_dir():
        raise FustalError(f"features: not a folder: {folder}")
    videos, npy = video_files(folder), feature_files(folder)
    if videos and npy:
        raise FustalError(
            f"features: {folder} holds both .npy feature files and video files; pass a folder"
            " of one kind"
        )
    if not videos and not npy:
        raise FustalError(f"features: no .npy feature files or video files in {folder}")
    if not videos:
        return folder, {}
    from fustal.extract.extractor import ExtractConfig, extract_folder

    device = "cpu" if cfg.trainer.get("accelerator") == "cpu" else "auto"
    extract = ExtractConfig.from_record(ckpt.feature_timing or {}, str(ckpt.path), device=device)
    infos = extract_folder(folder, scratch, extract, console)
    return scratch, {vid: info.duration for vid, info in infos.items()}


def check_sidecar(folder: Path, timing: Mapping[str, Any], ckpt: Checkpoint) -> None:
    """A ``features.json`` in ``folder`` must describe the features the checkpoint takes: the
    same window, stride and fps (an fps-less sidecar: each video's own, not checked) and the same
    extractor record."""
    from fustal.data.features import SIDECAR, describe_features, read_sidecar

    path = folder / SIDECAR
    if not path.is_file():
        return
    sidecar = read_sidecar(path)
    theirs = {
        "layout": "overlap",
        "fps": sidecar.fps,
        "window_frames": sidecar.window_frames,
        "stride_frames": sidecar.stride_frames,
        "extractor": sidecar.extractor,
    }
    ours = {**timing, "extractor": (ckpt.feature_timing or {}).get("extractor")}
    keys = ["window_frames", "stride_frames", "extractor"] + (["fps"] if sidecar.fps else [])
    if ours["layout"] == "resized" or any(theirs[k] != ours[k] for k in keys):
        raise FustalError(
            f"{path}: these are features {describe_features(theirs)}; the {ckpt.kind} checkpoint"
            f" {ckpt.path} takes features {describe_features(ours)}"
        )


def check_steps(
    path: Path, steps: int, duration: float, timing: Mapping[str, Any], ckpt: Checkpoint
) -> None:
    """The checkpoint's time scale fits a video of ``duration`` seconds with ``steps`` feature
    steps: for windows, ``steps`` steps of ``stride_s`` seconds and a window span it to within
    a factor :data:`SPAN_TOLERANCE`; for resized features, ``steps`` is the trained length."""
    if timing["layout"] == "resized":
        trained = timing.get("steps")
        if trained is not None and steps != trained:
            raise FustalError(
                f"{path}: {steps} feature steps; the {ckpt.kind} checkpoint {ckpt.path} was"
                f" trained on features resized to {trained} steps per video"
            )
        return
    stride_s = timing["stride_frames"] / timing["fps"]
    window_s = timing["window_frames"] / timing["fps"]
    low, high = (steps - 1) * stride_s, steps * stride_s + window_s
    if duration * SPAN_TOLERANCE < low or duration > high * SPAN_TOLERANCE:
        raise FustalError(
            f"{path}: {steps} feature steps of {stride_s:.3g} s (the {ckpt.kind} checkpoint's"
            f" step) span {low:.1f}-{high:.1f} s, but the video lasts {duration:.1f} s: these"
            f" features have another step than the ones {ckpt.path} was trained on"
            f" ({timing['window_frames']:g}-frame windows every {timing['stride_frames']:g}"
            f" frames at {timing['fps']:g} fps)"
        )


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
    """Layout, fps, stride and window frames: the config's where set, else the checkpoint's;
    ``steps``: the checkpoint's resized length (None: not resized, or not stored)."""
    stored = ckpt.feature_timing or {}
    timing: dict[str, Any] = {
        k: cfg[k] if cfg[k] is not None else stored.get(k) for k in TIMING_KEYS
    }
    timing["layout"] = stored.get("layout", "overlap")
    timing["steps"] = stored.get("steps")
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
    ckpt: Checkpoint,
    durations: Mapping[str, float],
) -> StageData:
    """The feature files as a one-subset :class:`StageData` without ground truth, so that the
    pipeline's data modules and inference functions run on them unchanged; each file's length
    is checked against its duration (:func:`check_steps`)."""
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
        dim=ckpt.feature_dim,
    )
    videos = {}
    for path in files:
        vid, steps = path.stem, num_steps(path, ckpt.feature_dim)
        duration = durations.get(vid)
        if duration is None and spec.layout == "resized":
            raise FustalError(
                f"{path}: the checkpoint's resized features need the video's duration; pass"
                " durations=FILE (JSON {video_id: seconds})"
            )
        if duration is not None:
            check_steps(path, steps, duration, timing, ckpt)
        else:
            # not resized: resolve_timing made every timing value a positive number
            frames = (steps - 1) * timing["stride_frames"] + timing["window_frames"]
            duration = frames / timing["fps"]
        videos[vid] = Video(
            vid, SUBSET, float(duration), spec.fps, np.zeros((0, 2)), np.zeros(0, np.int64)
        )
    annotations = Annotations(classes, videos, source=str(folder), subsets=[SUBSET])
    return StageData(annotations, spec, SUBSET, SUBSET)


def fusion_settings(cfg: DictConfig, ckpt: Checkpoint, console: Console) -> dict[str, Any] | None:
    """The student's ``fusion`` keywords (``topk``, ``rule``): the config's where set, else the
    checkpoint's, else 2 / sqrt; None without ``fusion.source``. A class-agnostic student
    without a score source is a :class:`FustalError` (it predicts no classes)."""
    fcfg, stored = cfg.fusion, dict(ckpt.hparams.get("fusion") or {})
    if fcfg.source is None:
        if ckpt.hparams.get("class_agnostic"):
            raise FustalError(
                f"{ckpt.path}: a class-agnostic student predicts no classes of its own; pass"
                " fusion.source=generator fusion.generator_ckpt=GENERATOR.ckpt or"
                " fusion.source=file fusion.score_file=FILE"
            )
        if stored:
            console.print(
                "[yellow]predict: this student was evaluated with video-level score fusion in"
                " training; these detections are not fused (fusion.source=generator|file)[/yellow]"
            )
        return None
    if fcfg.source not in ("generator", "file"):
        raise FustalError(f"fusion.source: expected null, generator or file, got {fcfg.source!r}")
    if ckpt.kind != "student":
        raise FustalError(f"fusion.source: fusion applies to student checkpoints ({ckpt.path})")
    return {
        "topk": fcfg.topk if fcfg.topk is not None else stored.get("topk", 2),
        "rule": fcfg.rule if fcfg.rule is not None else stored.get("rule", "sqrt"),
    }


def generator_video_scores(
    cfg: DictConfig, classes: list[str], videos: list[str], durations: Mapping[str, float]
) -> dict[str, np.ndarray]:
    """The video-level class scores of ``videos`` from ``fusion.generator_ckpt`` run on
    ``fusion.generator_features`` (default: the features folder)."""
    from fustal.checkpoints import load_checkpoint
    from fustal.generator.module import VIDEO_SCORES

    fcfg = cfg.fusion
    if fcfg.generator_ckpt is None:
        raise FustalError(
            "fusion.generator_ckpt: fusion.source=generator needs the generator checkpoint"
            " (generator.ckpt) whose video-level scores to fuse"
        )
    gen = load_checkpoint(str(fcfg.generator_ckpt))
    if gen.kind != "generator":
        raise FustalError(f"fusion.generator_ckpt: {gen.path} is a {gen.kind} checkpoint")
    if gen.classes is not None and gen.classes != classes:
        raise FustalError(
            f"fusion.generator_ckpt: {gen.path} was trained on other classes than the student"
        )
    folder = Path(str(fcfg.generator_features or cfg.features)).expanduser()
    files = [f for f in feature_files(folder) if f.stem in set(videos)]
    absent = sorted(set(videos) - {f.stem for f in files})
    if absent:
        raise FustalError(
            f"fusion.generator_features: {folder} has no feature file for video {absent[0]}"
            f" ({len(absent)} of {len(videos)} missing)"
        )
    timing = resolve_timing(cfg, gen, make_console())
    data = prediction_data(folder, files, classes, timing, gen, durations)
    return predict_detections(cfg, gen, data, None)[VIDEO_SCORES]


def fusion_scores(
    cfg: DictConfig, classes: list[str], data: StageData, durations: Mapping[str, float]
) -> dict[str, np.ndarray]:
    """The video-level class scores of the videos to predict on (``fusion.source``)."""
    from fustal.fusion import read_score_file

    videos = [v.id for v in data.test_videos()]
    if cfg.fusion.source == "file":
        if cfg.fusion.score_file is None:
            raise FustalError("fusion.score_file: fusion.source=file needs a score file")
        return read_score_file(str(cfg.fusion.score_file), classes, videos)
    return generator_video_scores(cfg, classes, videos, durations)


def predict_detections(
    cfg: DictConfig, ckpt: Checkpoint, data: StageData, fusion: Mapping[str, np.ndarray] | None
) -> dict[str, dict[str, np.ndarray]]:
    """Through ``Trainer.predict``: ``{"detections": {video: [K, 4]}}`` (class, score,
    start_s, end_s): the student's EMA weights when ``use_ema`` and the checkpoint has them,
    else its raw ones, fused with the video-level class scores ``fusion`` when given; a
    generator's proposals, clipped to the video's duration, and its ``video_scores``."""
    from fustal.generator.build import generator_datamodule
    from fustal.generator.module import VIDEO_SCORES
    from fustal.inference import predict_videos
    from fustal.student.build import student_datamodule
    from fustal.training.trainer import make_trainer

    module = ckpt.module
    trainer = make_trainer(cfg, "predict")
    loading = {"eval_batch_size": cfg.batch_size, "num_workers": cfg.num_workers}
    if ckpt.kind == "student":
        net = cast("TriDet", module.model)
        dm = student_datamodule(None, data, net, video_scores=fusion, **loading)
        out = predict_videos(trainer, module, dm.loader("test"))
        variant = "student_ema" if cfg.use_ema and "student_ema" in out else "student"
        return {DETECTIONS: out[variant]}
    hp: Any = module.hparams
    if hp.get("num_segments") is None or hp.get("proposals") is None:
        raise FustalError(
            f"{ckpt.path}: the generator checkpoint stores no proposal settings (written before"
            " fustal stored them); retrain it, or predict with a student checkpoint"
        )
    gdm = generator_datamodule(None, data, num_segments=hp.num_segments, **loading)
    out = predict_videos(trainer, module, gdm.loader("test"))
    clipped: dict[str, np.ndarray] = {}
    for video in data.test_videos():
        props = out["generator"][video.id].copy()
        props[:, 2:4] = np.clip(props[:, 2:4], 0.0, video.duration)
        clipped[video.id] = props[props[:, 3] > props[:, 2]]
    return {DETECTIONS: clipped, VIDEO_SCORES: out[VIDEO_SCORES]}


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
    from fustal.checkpoints import load_checkpoint
    from fustal.io import write_json
    from fustal.metrics.results import rows_to_results
    from fustal.student.module import StudentModule, check_fusion
    from fustal.training.quiet import quiet_libraries

    for key in ("ckpt_path", "features"):
        if OmegaConf.is_missing(cfg, key) or cfg[key] is None:
            raise FustalError(
                f"{key}: not set (python -m fustal.predict ckpt_path=CKPT features=DIR"
                " out=detections.json)"
            )
    out = Path(str(cfg.out)).expanduser()
    if out.is_dir():
        raise FustalError(f"out: {out} is a folder; name the results file (out=FILE.json)")
    quiet_libraries()
    console = make_console()
    ckpt = load_checkpoint(str(cfg.ckpt_path))
    fusion = fusion_settings(cfg, ckpt, console)
    if isinstance(ckpt.module, StudentModule):
        ckpt.module.fusion = check_fusion(fusion)  # what its predict_step fuses with
    console.print(f"predict: {ckpt.describe()}")
    classes = resolve_classes(cfg, ckpt)
    timing = resolve_timing(cfg, ckpt, console)
    given = read_durations(cfg.durations)
    with tempfile.TemporaryDirectory(prefix="fustal-predict-") as scratch:
        folder, durations = feature_folder(cfg, ckpt, Path(scratch), console)
        check_sidecar(folder, timing, ckpt)
        files = feature_files(folder)
        known = {**durations, **given}
        data = prediction_data(folder, files, classes, timing, ckpt, known)
        scores = None if fusion is None else fusion_scores(cfg, classes, data, known)
        if fusion is not None:
            console.print(
                f"predict: classes fused from {cfg.fusion.source} video-level scores"
                f" (top {fusion['topk']}, {fusion['rule']})"
            )
        detections = predict_detections(cfg, ckpt, data, scores)[DETECTIONS]
    results = rows_to_results(detections, classes)
    write_json(out, results)
    console.print(summary_table(data, detections, out))
    total = sum(len(d) for d in detections.values())
    console.print(f"predict: {total} detections on {len(files)} videos written to {out}")
    return results


@hydra.main(version_base="1.3", config_path=None, config_name=CONFIG_NAME)
def main(cfg: DictConfig) -> None:
    absolute_paths(
        cfg,
        (
            "ckpt_path",
            "features",
            "out",
            "durations",
            "fusion.score_file",
            "fusion.generator_ckpt",
            "fusion.generator_features",
        ),
    )
    run(cfg)


if __name__ == "__main__":
    main()
