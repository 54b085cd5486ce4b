"""The end of a run: the results table, and the results logged to TensorBoard / W&B as scalars,
tables and pictures."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from fustal.metrics.shape import sections
from fustal.training.loggers import make_loggers

RAW_FILTERED = ("raw", "filtered")


def log_run_summary(cfg: DictConfig, metrics: dict, pictures: list[Path]) -> None:
    """Log the run's (flat) metrics to the TensorBoard / W&B loggers (job ``summary``): test mAP
    per tIoU and pseudo-label quality as tables and as ``<stage>/<subset>/<name>`` scalars, and
    the pictures as images (tag ``pictures/<file stem>``)."""
    from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

    loggers = [
        lg for lg in make_loggers(cfg, "summary") if isinstance(lg, TensorBoardLogger | WandbLogger)
    ]
    if not loggers:
        return
    tables = summary_tables(metrics)
    scalars = {k.replace(".", "/", 2): v for k, v in metrics.items() if isinstance(v, int | float)}
    for logger in loggers:
        logger.log_metrics(scalars, step=0)
        for name, (columns, rows) in tables.items():
            if isinstance(logger, WandbLogger):
                logger.log_table(key=f"tables/{name}", columns=columns, data=rows)
            else:
                markdown = [columns, ["---"] * len(columns), *rows]
                text = "\n".join(" | ".join(str(cell) for cell in row) for row in markdown)
                logger.experiment.add_text(f"tables/{name}", text)
        log_pictures(logger, pictures)
        logger.finalize("success")
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()


def summary_tables(metrics: dict) -> dict[str, tuple[list[str], list[list]]]:
    """Tables ``name -> (columns, rows)`` of the flat ``metrics``: ``test_map`` and ``val_map``
    (one row per model, one column per tIoU) and ``pseudo_label_quality`` (one row per raw /
    filtered)."""
    grouped = sections(metrics)
    groups = {
        "test_map": ("model", {k: v for k, v in grouped.items() if k.endswith(".test")}),
        # validation=heldout|video_labels: the held-out training videos
        "val_map": ("model", {k: v for k, v in grouped.items() if k.endswith(".val")}),
        "pseudo_label_quality": (
            "pseudo_labels",
            {k.split(".")[-1]: v for k, v in grouped.items() if k.split(".")[-1] in RAW_FILTERED},
        ),
    }
    tables: dict[str, tuple[list[str], list[list]]] = {}
    for name, (first, rows) in groups.items():
        if rows:
            columns = list(next(iter(rows.values())))
            cells = [
                [k, *(round(v.get(c, float("nan")), 6) for c in columns)] for k, v in rows.items()
            ]
            tables[name] = ([first, *columns], cells)
    return tables


def log_pictures(logger: object, paths: list[Path]) -> None:
    """Log PNGs as images (tag ``pictures/<file stem>``) to a TensorBoard or W&B logger."""
    from matplotlib.image import imread
    from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

    for path in paths:
        tag = f"pictures/{path.stem}"
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, imread(path)[..., :3], dataformats="HWC")
        elif isinstance(logger, WandbLogger):
            logger.log_image(key=tag, images=[str(path)])
