"""Stage dispatch for ``python -m fustal.train``, the run's pictures (``RUN_DIR/pictures/``) and
the end-of-run summary table."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from rich.table import Table

from fustal.config import make_console, print_config_tree
from fustal.errors import FustalError
from fustal.metrics.results import gt_to_detections, read_results, results_to_detections
from fustal.pipeline.context import RunContext, is_global_zero, make_loggers
from fustal.pipeline.data import PipelineData, load_pipeline_data, run_data_stage
from fustal.pipeline.distributed import distributed_run
from fustal.viz.pr import pr_summary
from fustal.viz.rundir import draw_run, segment_entries, write_inputs

log = logging.getLogger(__name__)

STAGES = ("data", "generator", "filter", "student", "all")


def output_dir(cfg: DictConfig) -> Path:
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.output_dir)


@dataclass
class StageOutputs:
    """What the stages of one run produced (None: that stage did not run)."""

    generator_dir: Path | None = None
    pseudo_path: Path | None = None
    filtered: dict | None = None
    student_dir: Path | None = None


def run_pipeline(cfg: DictConfig) -> dict:
    """Run the stage(s) selected by ``cfg.stage``; draw the pictures; return the run's
    metrics."""
    if cfg.stage not in STAGES:
        raise FustalError(f"stage: unknown stage '{cfg.stage}' (one of {', '.join(STAGES)})")
    if cfg.supervision not in ("weak", "full"):
        raise FustalError(f"supervision: expected weak or full, got '{cfg.supervision}'")
    plot_videos = cfg.plot_videos
    if isinstance(plot_videos, bool) or not (isinstance(plot_videos, int) and plot_videos >= 0):
        raise FustalError(f"plot_videos: expected an integer >= 0, got {plot_videos!r}")
    console = make_console()
    print_config_tree(cfg, console=console)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.stage == "data":
        return run_data_stage(cfg, console)

    ctx = RunContext(cfg, output_dir(cfg), console)
    data = load_pipeline_data(cfg)
    with distributed_run(cfg):
        outputs = run_stages(ctx, data)
    if is_global_zero():
        pictures = make_pictures(ctx, data, outputs) if plot_videos > 0 else []
        log_run_summary(cfg, ctx.metrics, pictures)
    console.print(results_table(ctx.metrics, cfg.supervision))
    return ctx.metrics


def run_stages(ctx: RunContext, data: PipelineData) -> StageOutputs:
    """Run generator, filter and student as far as ``cfg.stage`` asks (metrics go to ctx)."""
    from fustal.pipeline.generator_stage import run_generator_stage
    from fustal.pipeline.student_stage import (
        pseudo_label_file_key,
        run_filter_stage,
        run_student_stage,
    )

    cfg = ctx.cfg
    full = cfg.supervision == "full"
    out = StageOutputs(pseudo_path=Path(cfg.pseudo_labels) if cfg.pseudo_labels else None)
    upstream: object = "ground-truth" if full else None
    if not full and out.pseudo_path is None and cfg.stage in ("generator", "filter", "all"):
        gen = run_generator_stage(ctx, data.generator)
        out.generator_dir, out.pseudo_path, upstream = gen["dir"], gen["pseudo_labels"], gen["key"]
    if cfg.stage == "generator":
        return out
    if not full:
        if out.pseudo_path is None:
            raise FustalError(
                "pseudo_labels: stage=student needs pseudo labels: run stage=all or pass"
                " pseudo_labels=PATH (an ActivityNet results file)"
            )
        if upstream is None:
            upstream = pseudo_label_file_key(out.pseudo_path)
        out.filtered = run_filter_stage(ctx, data.student, out.pseudo_path)
        if cfg.stage == "filter":
            return out
    student = run_student_stage(
        ctx, data.student, out.filtered, {"pseudo": upstream, "filter": cfg.filter}
    )
    out.student_dir = student["dir"]
    return out


def picture_inputs(ctx: RunContext, data: PipelineData, outputs: StageOutputs) -> tuple[dict, dict]:
    """The ``inputs.json`` content and the CAS of the first ``plot_videos`` training videos
    (sorted ids): ground truth, generator CAS, raw and filtered pseudo labels, student
    detections, whichever this run has; plus the pseudo-label precision/recall over all
    training videos."""
    from fustal.inference import inference_device
    from fustal.pipeline.generator_stage import picture_cas
    from fustal.pipeline.student_stage import picture_detections

    cfg = ctx.cfg
    classes = data.classes
    train = data.student.train_videos()
    videos = sorted(train, key=lambda v: v.id)[: cfg.plot_videos]
    device = inference_device(cfg.trainer.accelerator)
    pseudo: dict[str, dict] = {}
    if outputs.pseudo_path is not None and cfg.supervision == "weak":
        pseudo["raw"] = read_results(outputs.pseudo_path)
    if outputs.filtered is not None:
        pseudo["filtered"] = outputs.filtered["results"]
    tracks = {f"pseudo labels ({key})": per_video for key, per_video in pseudo.items()}
    if outputs.student_dir is not None:
        name, dets = picture_detections(
            outputs.student_dir / "student.ckpt", data.student, videos, cfg.student, device
        )
        tracks[name] = dets["results"]
    cas = {}
    if outputs.generator_dir is not None:
        known = data.generator.annotations.videos
        cas = picture_cas(
            outputs.generator_dir / "generator.ckpt",
            data.generator,
            [known[v.id] for v in videos if v.id in known],
            cfg.generator.num_segments,
            device,
        )
    entries = [
        {
            "id": v.id,
            "duration": v.duration,
            "tracks": {
                "ground truth": segment_entries(v.segments, v.labels, classes),
                **{name: per_video.get(v.id, []) for name, per_video in tracks.items()},
            },
        }
        for v in videos
    ]
    pr = None
    if pseudo:
        gt, ids = gt_to_detections(train)
        preds = {k: results_to_detections(v, classes, ids) for k, v in pseudo.items()}
        pr = pr_summary(gt, preds, len(classes))
    return {"classes": classes, "videos": entries, "pseudo_label_pr": pr}, cas


def make_pictures(ctx: RunContext, data: PipelineData, outputs: StageOutputs) -> list[Path]:
    """Write the picture inputs under ``RUN_DIR/pictures/`` and draw the PNGs (rank 0 only);
    return their paths."""
    inputs, cas = picture_inputs(ctx, data, outputs)
    folder = write_inputs(ctx.output_dir, inputs, cas)
    paths = draw_run(ctx.output_dir)
    ctx.console.print(f"pictures: {len(paths)} PNG files in {folder}")
    return paths


def log_run_summary(cfg: DictConfig, metrics: dict, pictures: list[Path]) -> None:
    """Log the run's results to the TensorBoard / W&B loggers (job ``summary``): test mAP per
    tIoU and pseudo-label quality as tables and as ``<stage>/<subset>/<name>`` scalars, and the
    pictures as images (tag ``pictures/<file stem>``)."""
    from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

    loggers = [
        lg for lg in make_loggers(cfg, "summary") if isinstance(lg, TensorBoardLogger | WandbLogger)
    ]
    if not loggers:
        return
    tables = summary_tables(metrics)
    scalars = {
        f"{key.replace('.', '/')}/{name}": value
        for key, node in flat_sections(metrics).items()
        for name, value in node.items()
        if isinstance(value, int | float)
    }
    for logger in loggers:
        logger.log_metrics(scalars, step=0)
        for name, (columns, rows) in tables.items():
            if isinstance(logger, WandbLogger):
                logger.log_table(key=f"tables/{name}", columns=columns, data=rows)
            else:
                header = " | ".join(columns)
                lines = [header, " | ".join("---" for _ in columns)]
                lines += [" | ".join(str(cell) for cell in row) for row in rows]
                logger.experiment.add_text(f"tables/{name}", "\n".join(lines))
        log_pictures(logger, pictures)
        logger.finalize("success")
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()


def flat_sections(metrics: dict) -> dict[str, dict]:
    """``{"generator.test": {...}, "pseudo_labels.raw": {...}}`` from the nested metrics."""
    out: dict[str, dict] = {}
    for key, node in metrics.items():
        if not isinstance(node, dict):
            continue
        if all(not isinstance(v, dict) for v in node.values()):
            out[key] = node
        else:
            out.update({f"{key}.{k}": v for k, v in flat_sections(node).items()})
    return out


def summary_tables(metrics: dict) -> dict[str, tuple[list[str], list[list]]]:
    """Tables ``name -> (columns, rows)``: ``test_map`` (one row per model, one column per tIoU)
    and ``pseudo_label_quality`` (one row per raw / filtered)."""
    sections = flat_sections(metrics)
    tables: dict[str, tuple[list[str], list[list]]] = {}
    models = {k: v for k, v in sections.items() if k.endswith(".test")}
    if models:
        names = list(next(iter(models.values())))
        rows = [
            [key, *(round(node.get(n, float("nan")), 6) for n in names)]
            for key, node in models.items()
        ]
        tables["test_map"] = (["model", *names], rows)
    quality = {
        k: v for k, v in sections.items() if k in ("pseudo_labels.raw", "pseudo_labels.filtered")
    }
    if quality:
        names = list(next(iter(quality.values())))
        rows = [
            [key.split(".")[-1], *(round(node.get(n, float("nan")), 6) for n in names)]
            for key, node in quality.items()
        ]
        tables["pseudo_label_quality"] = (["pseudo_labels", *names], rows)
    return tables


def log_pictures(logger: object, paths: list[Path]) -> None:
    """Log PNGs as images (tag ``pictures/<file stem>``) to a TensorBoard or W&B logger."""
    from matplotlib.image import imread
    from pytorch_lightning.loggers import TensorBoardLogger

    for path in paths:
        tag = f"pictures/{path.stem}"
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, imread(path)[..., :3], dataformats="HWC")
        else:
            logger.log_image(key=tag, images=[str(path)])


ROWS = (
    ("generator (test)", "generator.test", "avg"),
    ("pseudo labels, raw (train)", "pseudo_labels.raw", "avg_mAP"),
    ("pseudo labels, filtered (train)", "pseudo_labels.filtered", "avg_mAP"),
    ("student (test)", "student.test", "avg"),
    ("student + EMA (test)", "student_ema.test", "avg"),
)


def results_table(metrics: dict, supervision: str = "weak") -> Table:
    """One table: generator, raw/filtered pseudo-label quality, student, student+EMA."""
    table = Table(title="fustal results (mAP in %)")
    for col in ("", "mAP@0.3", "mAP@0.5", "mAP@0.7", "avg mAP", "count", "prec@0.5", "rec@0.5"):
        table.add_column(col, justify="left" if not col else "right")
    for label, key, avg_key in ROWS:
        if supervision == "full":
            label = label.replace("student", "upper bound: student on ground truth")
        node = metrics
        for part in key.split("."):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if not node:
            continue

        def pct(name: str, node: dict = node) -> str:
            return f"{100 * node[name]:.2f}" if name in node else "-"

        count = str(node["count"]) if "count" in node else "-"
        table.add_row(
            label,
            pct("mAP@0.3"),
            pct("mAP@0.5"),
            pct("mAP@0.7"),
            pct(avg_key),
            count,
            pct("precision@0.5"),
            pct("recall@0.5"),
        )
    return table
