"""``python -m fustal.evaluate ckpt_path=CKPT [+experiment=NAME] [overrides]``: test metrics and
test detections of a saved student or generator checkpoint, written to the run dir
(``outputs/evaluate/<date>_<time>/``). ``conf/evaluate.yaml`` is ``conf/train.yaml`` plus
``ckpt_path``: the config describes the data the checkpoint was trained on and the evaluation
settings (decoding, proposals, thresholds, ``fusion``: ``generator`` = the cached generator
stage of the same config), the checkpoint its model. A checkpoint or score file that does not
fit is one line ``error: ...``, exit 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import hydra
from omegaconf import DictConfig, OmegaConf

from fustal.config import (
    CONFIG_DIR,
    absolute_paths,
    make_console,
    register_resolvers,
    run_dir,
    to_plain,
)
from fustal.config.schema import TrainSchema
from fustal.errors import FustalError, exit_on_error

if TYPE_CHECKING:
    from fustal.checkpoints import Checkpoint
    from fustal.data.dataset import StageData
    from fustal.fusion import FusionInputs
    from fustal.student.model import TriDet

register_resolvers()


@dataclass
class EvaluateSchema(TrainSchema):
    """``conf/evaluate.yaml``: the train config plus the checkpoint."""

    ckpt_path: str | None = None


def load_data(cfg: DictConfig, kind: str) -> StageData:
    """The dataset as the checkpoint's stage sees it (the generator's class order is the
    student annotation file's, as in the pipeline)."""
    from fustal.data.dataset import load_stage_data
    from fustal.data.views import dataset_config, load_pipeline_data, view_config

    if kind == "generator":
        return load_pipeline_data(cfg).generator
    return load_stage_data(dataset_config(cfg), view_config(cfg, "student"))


def evaluation_overrides(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """What the config sets about evaluation, over the checkpoint's hyperparameters (as in the
    pipeline: the student's decoding and score fusion, the generator's proposals)."""
    from fustal.fusion import config_fusion

    gen = cfg.generator.module
    fusion = config_fusion(cfg.fusion)
    return {
        "student": {"inference": to_plain(cfg.student.module.inference), "fusion": fusion},
        "generator": {
            "proposals": to_plain(gen.proposals),
            "proposal_workers": to_plain(gen.proposal_workers),
        },
    }


def fusion_inputs(cfg: DictConfig, ckpt: Checkpoint, data: StageData) -> FusionInputs:
    """What ``fusion`` fuses into a student's detections of the test videos: their video-level
    class scores (``fusion=file``: its score file; ``fusion=generator``: the generator stage of
    this config in the stage cache, what ``fustal.train`` with the same overrides wrote) and, at
    ``fusion.level=detections``, that generator's detections of them. Nothing without fusion; a
    class-agnostic student without fusion is a :class:`FustalError`."""
    from fustal.fusion import DETECTION_FILE, SCORE_FILE, read_score_file
    from fustal.metrics.results import read_rows

    if ckpt.kind != "student":
        return None, None
    if not cfg.fusion.source:
        if ckpt.hparams.get("class_agnostic"):
            raise FustalError(
                f"{ckpt.path}: a class-agnostic student predicts no classes; evaluate it with"
                " fusion=generator (the cached generator of this config) or fusion=file"
                " fusion.score_file=PATH"
            )
        return None, None
    videos = [v.id for v in data.test_videos()]
    if cfg.fusion.source == "file":
        return read_score_file(str(cfg.fusion.score_file), data.classes, videos), None
    folder = cached_generator_dir(cfg)
    if not (folder / "manifest.json").is_file():
        raise FustalError(
            f"fusion=generator: no finished generator stage of this config in the cache"
            f" ({folder}); run python -m fustal.train with the same overrides first, or"
            f" pass fusion=file fusion.score_file=RUN_DIR/{SCORE_FILE}"
        )
    scores = read_score_file(folder / SCORE_FILE, data.classes, videos)
    if cfg.fusion.level != "detections":
        return scores, None
    return scores, read_rows(folder / DETECTION_FILE, data.classes, "fusion=generator")


def cached_generator_dir(cfg: DictConfig) -> Any:
    """The stage-cache entry of the generator that ``fustal.train`` runs with ``cfg``."""
    from pathlib import Path

    from fustal.data.views import load_pipeline_data
    from fustal.pipeline.stage import RunContext
    from fustal.pipeline.stages.generator import GeneratorStage

    ctx = RunContext(cfg, Path(run_dir(cfg)), make_console(), load_pipeline_data(cfg))
    return Path(cfg.paths.cache_dir) / GeneratorStage.name / GeneratorStage(ctx, {}).key()


def datamodule(
    cfg: DictConfig, ckpt: Checkpoint, data: StageData, fusion: FusionInputs = (None, None)
) -> Any:
    """The stage's DataModule (``<stage>.data`` config) on ``data`` (a student's with what
    ``fusion`` fuses, :func:`fusion_inputs`)."""
    from fustal.generator.build import generator_datamodule
    from fustal.student.build import student_datamodule

    workers = cfg.num_workers
    if ckpt.kind == "student":
        model = cast("TriDet", ckpt.module.model)
        return student_datamodule(
            cfg.student.data,
            data,
            model,
            cfg.seed,
            video_scores=fusion[0],
            video_detections=fusion[1],
            num_workers=workers,
        )
    return generator_datamodule(cfg.generator.data, data, cfg.seed, num_workers=workers)


@exit_on_error
def run(cfg: DictConfig) -> dict:
    """Check the config (before torch is imported: a mistake in it is reported within about a
    second), load the checkpoint, check it against the dataset, evaluate it; return the
    metrics."""
    from fustal.config.checks import check_config

    if OmegaConf.is_missing(cfg, "ckpt_path") or cfg.ckpt_path is None:
        raise FustalError(
            "ckpt_path: not set (python -m fustal.evaluate ckpt_path=PATH/student.ckpt"
            " [+experiment=NAME])"
        )
    check_config(cfg, EvaluateSchema)
    from fustal.checkpoints import load_checkpoint
    from fustal.fusion import SCORE_FILE, score_file_payload
    from fustal.generator.module import VIDEO_SCORES
    from fustal.inference import predict_videos
    from fustal.io import ensure_writable_dir, write_json
    from fustal.metrics.results import score_rows, write_results
    from fustal.metrics.shape import nest
    from fustal.metrics.table import results_table
    from fustal.training.quiet import quiet_libraries
    from fustal.training.trainer import make_trainer

    quiet_libraries()
    console = make_console()
    ckpt = load_checkpoint(str(cfg.ckpt_path), evaluation_overrides(cfg))
    console.print(f"evaluate: {ckpt.describe()}")
    data = load_data(cfg, ckpt.kind)
    ckpt.check_data(data)
    dm = datamodule(cfg, ckpt, data, fusion_inputs(cfg, ckpt, data))
    out = ensure_writable_dir(run_dir(cfg))
    trainer = make_trainer(cfg, "evaluate")
    tiou = list(cfg.dataset.tiou_thresholds)
    metrics: dict[str, Any] = {}
    for variant, rows in predict_videos(trainer, ckpt.module, dm.loader("test")).items():
        if variant == VIDEO_SCORES:
            write_json(out / SCORE_FILE, score_file_payload(rows, data.classes))
            continue
        write_results(out / f"{variant}_test.json", rows, data.classes)
        scores = score_rows(rows, dm.videos["test"], data.num_classes, tiou)
        metrics.update({f"{variant}.test.{name}": value for name, value in scores.items()})
    nested = nest(metrics)
    write_json(out / "metrics.json", nested)
    console.print(results_table(metrics, tiou))
    console.print(f"evaluate: metrics.json and test detections in {out}")
    return nested


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    absolute_paths(cfg)
    run(cfg)


if __name__ == "__main__":
    main()
