"""One-line checks of a composed config against :mod:`fustal.config.schema`: unknown keys (typos,
``+key=value`` that nothing reads), values of the wrong type, values outside their choices, and
``trainer`` keys that are no Lightning Trainer argument or that a stage sets itself."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from fustal.config.schema import TrainSchema
from fustal.errors import FustalError

CHOICES: dict[str, tuple[Any, ...]] = {
    "stage": ("data", "generator", "filter", "student", "all"),
    "supervision": ("weak", "full"),
    "cache": (True, False, "refresh"),
    "student.full_schedule": ("constant", "cosine"),
    "student.module.scheduler.schedule": ("constant", "cosine"),
    "features.generator.layout": ("nonoverlap", "overlap", "resized"),
    "features.student.layout": ("nonoverlap", "overlap", "resized"),
    "fusion.source": (None, "generator", "file"),
    "fusion.rule": ("sqrt", "product"),
}
# the pictures show at most this many training and test videos
MAX_PLOT_VIDEOS = 8


def _unknown_key_message(plain: Mapping[str, Any], full_key: str, schema: Any) -> str:
    parent, _, key = full_key.rpartition(".")
    known: list[str] = []
    node = OmegaConf.structured(schema)
    for part in parent.split(".") if parent else []:
        node = node.get(part) if isinstance(node, DictConfig) else None
    if isinstance(node, DictConfig):
        known = [str(k) for k in node]
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {parent + '.' if parent else ''}{close[0]}?)" if close else ""
    return f"{full_key}: unknown key, nothing reads it{hint}"


def check_against_schema(plain: Mapping[str, Any], schema: Any = TrainSchema) -> None:
    """Merge the resolved config into the schema; a mismatch is a one-line error."""
    try:
        OmegaConf.merge(OmegaConf.structured(schema), plain)
    except ConfigKeyError as err:
        raise FustalError(_unknown_key_message(plain, str(err.full_key), schema)) from None
    except ValidationError as err:
        reason = str(err.msg).splitlines()[0]
        raise FustalError(f"{err.full_key}: {reason}") from None


def check_choices(plain: Mapping[str, Any]) -> None:
    """Values that must be one of a few."""
    for key, choices in CHOICES.items():
        value = OmegaConf.select(OmegaConf.create(dict(plain)), key, default=None)
        if value is not None and value not in choices:
            shown = ", ".join(
                "null" if c is None else str(c).lower() if isinstance(c, bool) else str(c)
                for c in choices
            )
            raise FustalError(f"{key}: expected one of {shown}, got {value!r}")
    plot = plain.get("plot_videos", 0)
    if isinstance(plot, bool) or not isinstance(plot, int) or not 0 <= plot <= MAX_PLOT_VIDEOS:
        raise FustalError(
            f"plot_videos: expected an integer in [0, {MAX_PLOT_VIDEOS}], got {plot!r}"
        )


def check_config(cfg: DictConfig, schema: Any = TrainSchema) -> None:
    """Validate a composed ``conf/train.yaml`` (or a config extending it with ``schema``)."""
    from fustal.config import register_resolvers
    from fustal.training.trainer import check_trainer_config

    register_resolvers()
    try:
        plain = {
            str(key): OmegaConf.to_container(value, resolve=True)
            if OmegaConf.is_config(value)
            else value
            for key, value in ((k, cfg[k]) for k in cfg if k != "hydra")
        }
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        reason = str(getattr(err, "msg", err)).splitlines()[0]
        raise FustalError(f"{key}: {reason}" if key else reason) from None
    assert isinstance(plain, dict)
    check_against_schema(plain, schema)
    check_choices(plain)
    check_fusion(plain)
    check_trainer_config(plain.get("trainer") or {})


def check_fusion(plain: Mapping[str, Any]) -> None:
    """``fusion`` settings that fit together: a score file for ``fusion=file``, a positive
    ``topk``, and fusion for a class-agnostic student (it predicts no classes of its own)."""
    fusion = plain.get("fusion") or {}
    if fusion.get("source") == "file" and not fusion.get("score_file"):
        raise FustalError(
            "fusion.score_file: fusion=file needs a score file (fusion.score_file=PATH, JSON"
            ' {"results": {video_id: [class scores]}})'
        )
    if int(fusion.get("topk", 1)) < 1:
        raise FustalError(f"fusion.topk: must be at least 1, got {fusion.get('topk')}")
    module = (plain.get("student") or {}).get("module") or {}
    if module.get("class_agnostic") and not fusion.get("source"):
        raise FustalError(
            "student.module.class_agnostic: a class-agnostic student predicts no classes; fuse"
            " video-level scores (fusion=generator or fusion=file)"
        )
