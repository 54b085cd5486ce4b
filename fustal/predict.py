"""``python -m fustal.predict ckpt_path=CKPT features=DIR out=detections.json``: detections of a
saved student or generator checkpoint on new feature files (``DIR/*.npy``, ``[T, D]`` in the
checkpoint's layout, video id = file stem) or video files (extracted as the checkpoint's training
features were), without annotations. Class names and feature timing come from the checkpoint;
features that do not fit it are refused; a class-agnostic student fuses video-level scores of
a generator checkpoint or a score file (``fusion.*``). The keys: ``conf/predict.yaml``, served
through Hydra's ConfigStore so that ``features=DIR`` is a value (in ``conf/`` it is a group);
the behaviour: README, *Evaluate and predict*. Bad input is one line ``error: ...``, exit 2, and
leaves no results file.
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
from fustal.data.prediction import (
    TIMING_KEYS,
    check_sidecar,
    feature_files,
    prediction_data,
    read_durations,
)
from fustal.errors import FustalError, exit_on_error

if TYPE_CHECKING:
    from fustal.checkpoints import Checkpoint
    from fustal.data.dataset import StageData
    from fustal.fusion import FusionInputs
    from fustal.student.model import TriDet

register_resolvers()
CONFIG_NAME = "fustal_predict"
ConfigStore.instance().store(name=CONFIG_NAME, node=OmegaConf.load(CONFIG_DIR / "predict.yaml"))

# predict_detections' key of the detections
DETECTIONS = "detections"
SHOWN_VIDEOS = 10


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
    timing: dict[str, Any] = {k: stored.get(k) if cfg[k] is None else cfg[k] for k in TIMING_KEYS}
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


def fusion_settings(cfg: DictConfig, ckpt: Checkpoint, console: Console) -> dict[str, Any] | None:
    """The student's ``fusion`` keywords (:func:`~fustal.fusion.fusion_keywords`): the
    config's where set, else the checkpoint's, else the defaults; None without
    ``fusion.source``. A class-agnostic student without a score source is a
    :class:`FustalError` (it predicts no classes)."""
    from fustal.fusion import KEYS, check_source, fusion_keywords

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
    chosen = {k: fcfg[k] if fcfg[k] is not None else stored.get(k) for k in KEYS}
    fusion = fusion_keywords({k: v for k, v in chosen.items() if v is not None})
    check_source(fusion, fcfg.source)
    return fusion


def fusion_inputs(
    cfg: DictConfig, classes: list[str], data: StageData, durations: Mapping[str, float]
) -> FusionInputs:
    """The video-level class scores of the videos to predict on: of ``fusion.score_file``, or
    of ``fusion.generator_ckpt`` run on ``fusion.generator_features`` (default: ``features``),
    with that generator's detections of them (none from a score file)."""
    from fustal.checkpoints import load_checkpoint
    from fustal.fusion import read_score_file
    from fustal.generator.module import VIDEO_SCORES

    fcfg, videos = cfg.fusion, [v.id for v in data.test_videos()]
    key = "score_file" if fcfg.source == "file" else "generator_ckpt"
    if fcfg[key] is None:
        raise FustalError(f"fusion.{key}: fusion.source={fcfg.source} needs fusion.{key}=PATH")
    if fcfg.source == "file":
        return read_score_file(str(fcfg.score_file), classes, videos), None
    gen = load_checkpoint(str(fcfg.generator_ckpt))
    if gen.kind != "generator" or (gen.classes is not None and gen.classes != classes):
        raise FustalError(
            f"fusion.generator_ckpt: {gen.path} is not a generator of the student's classes"
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
    gen_data = prediction_data(folder, files, classes, timing, gen, durations)
    out = predict_detections(cfg, gen, gen_data)
    return out[VIDEO_SCORES], out[DETECTIONS]


def predict_detections(
    cfg: DictConfig,
    ckpt: Checkpoint,
    data: StageData,
    fusion: FusionInputs = (None, None),
) -> dict[str, dict[str, np.ndarray]]:
    """Through ``Trainer.predict``: ``{"detections": {video: [K, 4]}}`` (class, score,
    start_s, end_s): the student's EMA weights when ``use_ema`` and the checkpoint has them,
    else its raw ones, fused with ``fusion`` when given (:func:`fusion_inputs`: video-level class
    scores and a generator's detections); a generator's proposals, clipped to the video's
    duration, and its ``video_scores``."""
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
        scores, found = fusion
        dm = student_datamodule(
            None, data, net, video_scores=scores, video_detections=found, **loading
        )
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


def detections_table(data: StageData, detections: Mapping[str, np.ndarray], out: Path) -> Table:
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
    from fustal.fusion import fusion_described, fusion_keywords
    from fustal.metrics.results import write_results
    from fustal.student.module import StudentModule
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
        ckpt.module.fusion = fusion_keywords(fusion)  # what its predict_step fuses with
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
        inputs = (None, None) if fusion is None else fusion_inputs(cfg, classes, data, known)
        if fusion is not None:
            source = "the generator" if cfg.fusion.source == "generator" else "the score file"
            console.print(f"predict: {fusion_described(fusion, source)}")
        detections = predict_detections(cfg, ckpt, data, inputs)[DETECTIONS]
    results = write_results(out, detections, classes)
    console.print(detections_table(data, detections, out))
    total = sum(len(d) for d in detections.values())
    console.print(f"predict: {total} detections on {len(files)} videos written to {out}")
    return results


@hydra.main(version_base="1.3", config_path=None, config_name=CONFIG_NAME)
def main(cfg: DictConfig) -> None:
    absolute_paths(cfg)
    run(cfg)


if __name__ == "__main__":
    main()
