"""``python -m fustal.evaluate ckpt_path=CKPT``: test metrics of a saved checkpoint.

Usage::

    python -m fustal.evaluate ckpt_path=outputs/cache/student/<key>/student.ckpt
    python -m fustal.evaluate ckpt_path=outputs/cache/generator/<key>/generator.ckpt \\
        +experiment=thumos14 dataset.root=/data/thumos14

``conf/evaluate.yaml`` is ``conf/train.yaml`` plus ``ckpt_path``: every group, experiment and key
of ``fustal.train`` applies, and together they must describe the data the checkpoint was trained
on. The model (TriDet student or generator) and its architecture come from the checkpoint; the
evaluation settings (``student.inference``, ``student.eval_batch_size``, ``generator.proposals``,
``generator.num_segments``, ``generator.eval_batch_size``, ``dataset.tiou_thresholds``) from the
config, as in the pipeline; ``trainer.accelerator`` picks the device. The run dir
(``outputs/evaluate/<date>_<time>/``, or ``hydra.run.dir``) gets ``metrics.json``
(``student.test`` and, with EMA weights, ``student_ema.test``; or ``generator.test``) and the
test detections (``student_test.json``, ``student_ema_test.json`` or ``generator_test.json``).

A checkpoint that is missing, unreadable, of another model, or trained on features of another
dimension or on other classes than the dataset's: one line ``error: ...``, exit code 2.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig, OmegaConf

from fustal.config import (
    CONFIG_DIR,
    absolute_paths,
    make_console,
    print_config_tree,
    register_resolvers,
    to_plain,
)
from fustal.errors import FustalError, exit_on_error

if TYPE_CHECKING:
    from fustal.data.dataset import StageData
    from fustal.inference import Checkpoint
    from fustal.pipeline.context import RunContext

register_resolvers()


def load_data(cfg: DictConfig, kind: str) -> StageData:
    """The dataset as the checkpoint's stage sees it (the generator's class order is the
    student annotation file's, as in the pipeline)."""
    from fustal.data.dataset import load_stage_data
    from fustal.pipeline.data import load_pipeline_data, resolve_dataset_root

    if kind == "generator":
        return load_pipeline_data(cfg).generator
    resolve_dataset_root(cfg)
    return load_stage_data(cfg.dataset, cfg.features.student)


def check_data(ckpt: Checkpoint, data: StageData) -> None:
    """Raise :class:`FustalError` unless the dataset has test videos with the feature dimension
    and the classes the checkpoint was trained on."""
    videos = data.test_videos()
    if not videos:
        raise FustalError(f"{data.annotations.source}: no '{data.test_subset}' videos to test on")
    dim = int(data.features.load(videos[0]).shape[1])
    if dim != ckpt.feature_dim:
        raise FustalError(
            f"{ckpt.path}: the {ckpt.kind} takes {ckpt.feature_dim}-dim features, but the"
            f" dataset's are {dim}-dim ({data.features.files(videos[0])[0]})"
        )
    if ckpt.num_classes != data.num_classes:
        raise FustalError(
            f"{ckpt.path}: the {ckpt.kind} predicts {ckpt.num_classes} classes, but the dataset"
            f" has {data.num_classes} ({data.annotations.source})"
        )
    classes = ckpt.classes
    if classes is not None and classes != data.classes:
        first = next(
            i for i, (a, b) in enumerate(zip(classes, data.classes, strict=False)) if a != b
        )
        raise FustalError(
            f"{ckpt.path}: the {ckpt.kind} was trained on other classes than the dataset's"
            f" (class {first}: '{classes[first]}' in the checkpoint, '{data.classes[first]}' in"
            f" {data.annotations.source})"
        )


def evaluate_student(
    cfg: DictConfig, ckpt: Checkpoint, data: StageData, ctx: RunContext, progress: bool
) -> None:
    """Test mAP and detections of the student and, when the checkpoint has them, its EMA
    weights (``student.test``, ``student_ema.test``)."""
    from fustal.data.student_datamodule import PseudoLabelDataModule
    from fustal.inference import tracked
    from fustal.metrics.results import proposals_to_results
    from fustal.pipeline.student_stage import evaluate_results, student_detections

    module = ckpt.module
    dm = PseudoLabelDataModule(
        data,
        None,
        module.model.max_seq_len,
        module.model.max_stride,
        cfg.student.batch_size,
        cfg.student.eval_batch_size,
        cfg.num_workers,
        seed=cfg.seed,
    )
    tiou = list(cfg.dataset.tiou_thresholds)
    variants = [("student", False)] + ([("student_ema", True)] if module.ema is not None else [])
    for name, use_ema in variants:
        loader = tracked(dm.predict_loader("test"), f"{name}: test videos", ctx.console, progress)
        results = proposals_to_results(student_detections(module, loader, use_ema), data.classes)
        ctx.write_json(f"{name}_test.json", results)
        ctx.record(f"{name}.test", evaluate_results(results, data, tiou))


def evaluate_generator_checkpoint(
    cfg: DictConfig, ckpt: Checkpoint, data: StageData, ctx: RunContext, progress: bool
) -> None:
    """Test mAP (``generator.test``) and test detections of the generator's proposals."""
    from fustal.inference import tracked
    from fustal.metrics.results import proposals_to_results
    from fustal.pipeline.generator_stage import (
        evaluate_generator,
        generator_datamodule,
        generator_proposals,
        proposal_params,
    )

    dm = generator_datamodule(cfg, data)
    params = proposal_params(cfg.generator.proposals)
    tiou = list(cfg.dataset.tiou_thresholds)
    loader = tracked(dm.val_dataloader(), "generator: test mAP", ctx.console, progress)
    metrics = evaluate_generator(
        ckpt.module, loader, dm.test_videos, data.num_classes, tiou, params
    )
    loader = tracked(dm.predict_loader("test"), "generator: test detections", ctx.console, progress)
    proposals = generator_proposals(ckpt.module, loader, params)
    ctx.write_json("generator_test.json", proposals_to_results(proposals, data.classes))
    ctx.record("generator.test", metrics)


@exit_on_error
def run(cfg: DictConfig) -> dict:
    """Load the checkpoint, check it against the dataset, evaluate it; return the metrics."""
    from fustal.inference import inference_device, load_checkpoint
    from fustal.pipeline.context import RunContext
    from fustal.pipeline.run import output_dir, results_table

    if OmegaConf.is_missing(cfg, "ckpt_path") or cfg.ckpt_path is None:
        raise FustalError(
            "ckpt_path: not set (python -m fustal.evaluate ckpt_path=PATH/student.ckpt"
            " [+experiment=NAME])"
        )
    console = make_console()
    ckpt = load_checkpoint(
        str(cfg.ckpt_path), {"student": {"inference": to_plain(cfg.student.inference)}}
    )
    shown = ["ckpt_path", "dataset", "features", ckpt.kind]
    print_config_tree(OmegaConf.create({k: to_plain(cfg[k]) for k in shown}), console=console)
    console.print(f"evaluate: {ckpt.describe()}")
    data = load_data(cfg, ckpt.kind)
    check_data(ckpt, data)
    ckpt.module.to(inference_device(cfg.trainer.accelerator))
    ctx = RunContext(cfg, output_dir(cfg), console)
    progress = bool(cfg.trainer.get("enable_progress_bar", True))
    evaluate = evaluate_student if ckpt.kind == "student" else evaluate_generator_checkpoint
    evaluate(cfg, ckpt, data, ctx, progress)
    console.print(results_table(ctx.metrics))
    console.print(f"evaluate: metrics.json and test detections in {ctx.output_dir}")
    return ctx.metrics


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    absolute_paths(cfg)
    run(cfg)


if __name__ == "__main__":
    main()
