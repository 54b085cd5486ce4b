"""One-line checks of a composed config against :mod:`fustal.config.schema`: unknown keys (typos,
``+key=value`` that nothing reads), values of the wrong type, values outside their choices, and
``trainer`` keys that are no Lightning Trainer argument or that a stage sets itself.

The plug-in points (:data:`PLUG_INS`: the filter, the generator's module) are checked against
the schema when they name fustal's own ``_target_``; a user's own target is imported and its
keys are checked against its signature instead (docs/extending.md)."""

from __future__ import annotations

import copy
import difflib
import inspect
from collections.abc import Mapping
from functools import cache
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from fustal.config import selects_best
from fustal.config.schema import SELECT_CHOICES, FilterSchema, GeneratorModuleSchema, TrainSchema
from fustal.data.features import LAYOUTS
from fustal.data.module_arguments import MODULE_ARGUMENTS
from fustal.errors import FustalError
from fustal.fusion import KEYS, check_source, fusion_keywords

CHOICES: dict[str, tuple[Any, ...]] = {
    "stage": ("data", "generator", "filter", "student", "all"),
    "supervision": ("weak", "full"),
    "cache": (True, False, "refresh"),
    "student.full_schedule": ("constant", "cosine"),
    "student.module.scheduler.schedule": ("constant", "cosine"),
    "features.generator.layout": LAYOUTS,
    "features.student.layout": LAYOUTS,
    "fusion.source": (None, "generator", "file"),
    "fusion.rule": ("sqrt", "product"),
    "validation.mode": ("test", "heldout", "video_labels"),
    "generator.select": SELECT_CHOICES,
    "student.select": SELECT_CHOICES,
    "student.distill_from": ("last", "best"),
}
# the pictures show at most this many training and test videos
MAX_PLOT_VIDEOS = 8
# config nodes a user may point at their own code: key -> the schema of fustal's own target, and
# the arguments the pipeline passes itself besides MODULE_ARGUMENTS (the generator's; not config
# keys)
PLUG_INS: dict[str, tuple[Any, tuple[str, ...]]] = {
    "filter": (FilterSchema, ("rows",)),
    "generator.module": (GeneratorModuleSchema, ("num_segments",)),
}
# keys of a plug-in node that are fustal's, not arguments of the target
PLUG_IN_KEYS = ("_target_", "_partial_")
# keys that are no longer read, and where their setting lives now
MOVED_KEYS = {
    "student.module.ema_decay": "ema.decay (ema=none: no EMA copy)",
    "student.module.ema_warmup": "ema.warmup",
    "student.module.teacher_score_thresh": "ema.score_thresh",
    "generator.data.num_workers": "num_workers",
    "student.data.num_workers": "num_workers",
    **{
        f"{group}.name": "Hydra's record of the chosen options (.hydra/hydra.yaml:"
        " hydra.runtime.choices)"
        for group in ("dataset", "generator", "filter", "student", "ema", "fusion")
    },
}


def _unknown_key_message(full_key: str, schema: Any) -> str:
    parent, _, key = full_key.rpartition(".")
    node = OmegaConf.select(structured(schema), parent)
    known = [str(k) for k in node] if isinstance(node, DictConfig) else []
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {parent + '.' if parent else ''}{close[0]}?)" if close else ""
    return f"{full_key}: unknown key, nothing reads it{hint}"


@cache
def structured(schema: Any) -> DictConfig:
    """The schema as a config, built once (``OmegaConf.merge`` does not change its inputs)."""
    return OmegaConf.structured(schema)


def check_against_schema(plain: Mapping[str, Any], schema: Any = TrainSchema) -> None:
    """Merge the resolved config into the schema; a mismatch is a one-line error."""
    try:
        OmegaConf.merge(structured(schema), plain)
    except ConfigKeyError as err:
        raise FustalError(_unknown_key_message(str(err.full_key), schema)) from None
    except ValidationError as err:
        reason = str(err.msg).splitlines()[0]
        raise FustalError(f"{err.full_key}: {reason}") from None


def check_choices(plain: Mapping[str, Any]) -> None:
    """Values that must be one of a few."""
    for key, choices in CHOICES.items():
        node, leaf = holder_of(plain, key)
        value = node.get(leaf) if isinstance(node, Mapping) else None
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
    validation = plain.get("validation") or {}
    fraction = validation.get("fraction", 0.1)
    if not 0 < fraction < 1:
        raise FustalError(f"validation.fraction: expected a number in (0, 1), got {fraction!r}")
    for stage in ("generator", "student"):
        select = (plain.get(stage) or {}).get("select", "auto")
        if select == "best" and validation.get("mode", "test") == "test":
            raise FustalError(
                f"{stage}.select=best: needs held-out videos to choose on (validation=heldout or"
                " validation=video_labels); choosing on the test videos tunes on test labels"
            )
    student = plain.get("student") or {}
    mode = validation.get("mode", "test")
    if student.get("distill_from") == "best" and not selects_best(
        student.get("select", "auto"), mode
    ):
        raise FustalError(
            "student.distill_from=best: distillation starts from the student's best held-out"
            " evaluation; it needs held-out videos (validation=heldout or validation=video_labels)"
            " and student.select=auto or best"
        )
    if student.get("select") == "best" and not student.get("val_every", 1):
        raise FustalError(
            "student.select=best: student.val_every=0 evaluates nothing during training to"
            " choose from; set student.val_every (e.g. 1: every epoch)"
        )
    ignore_score = (student.get("data") or {}).get("ignore_score")
    if ignore_score is not None and not 0 <= ignore_score < 1:
        raise FustalError(
            f"student.data.ignore_score: expected null or a score in [0, 1), got {ignore_score!r}"
        )
    patience = (plain.get("generator") or {}).get("patience")
    if patience is not None and patience < 1:
        raise FustalError(f"generator.patience: expected null or at least 1, got {patience!r}")


def check_config(cfg: DictConfig, schema: Any = TrainSchema) -> None:
    """Validate a composed ``conf/train.yaml`` (or a config extending it with ``schema``)."""
    from fustal.config import register_resolvers, to_plain

    register_resolvers()
    try:
        plain = {str(key): to_plain(cfg[key]) for key in cfg if key != "hydra"}
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        reason = str(getattr(err, "msg", err)).splitlines()[0]
        raise FustalError(f"{key}: {reason}" if key else reason) from None
    check_moved_keys(plain)
    check_against_schema(check_plug_ins(plain), schema)
    check_choices(plain)
    check_fusion(plain)
    check_filter(plain)
    check_objective(plain)
    # last: the trainer's arguments are checked against Lightning's Trainer, whose import takes
    # seconds; every other mistake is reported without it
    from fustal.training.trainer import check_trainer_config

    check_trainer_config(plain.get("trainer") or {})


def holder_of(plain: Mapping[str, Any], key: str) -> tuple[Any, str]:
    """The node of nested ``plain`` that holds the dotted ``key`` (None where a parent is
    missing), and the key's last part."""
    *parents, leaf = key.split(".")
    node: Any = plain
    for part in parents:
        node = node.get(part) if isinstance(node, Mapping) else None
    return node, leaf


def check_moved_keys(plain: Mapping[str, Any]) -> None:
    """A key of :data:`MOVED_KEYS` is a one-line error naming where its setting lives now."""
    for key, now in MOVED_KEYS.items():
        node, leaf = holder_of(plain, key)
        if isinstance(node, Mapping) and leaf in node:
            raise FustalError(f"{key}: no longer a key; its setting is {now}")


def check_objective(plain: Mapping[str, Any]) -> None:
    """An ``optimized_metric`` the run can produce: a ``val`` metric needs held-out videos
    (``validation=heldout|video_labels``), and ``video_labels`` scores only ``val.video_map``."""
    path = plain.get("optimized_metric")
    mode = (plain.get("validation") or {}).get("mode", "test")
    parts = str(path).split(".")
    if not path or parts[1:2] != ["val"]:
        return
    if mode == "test":
        raise FustalError(
            f"optimized_metric={path}: validation=test scores no val metrics; hold out training"
            " videos with validation=heldout or validation=video_labels"
        )
    if mode == "video_labels" and parts[2:] != ["video_map"]:
        raise FustalError(
            f"optimized_metric={path}: validation=video_labels scores only"
            f" {parts[0]}.val.video_map (validation=heldout also scores the detection mAP)"
        )


def check_filter(plain: Mapping[str, Any]) -> None:
    """Filter parameters given as lists are chosen on the held-out videos' segments, which
    ``validation=heldout`` has; fustal's own filter takes numbers or null (off)."""
    node = plain.get("filter") or {}
    lists = [k for k, v in node.items() if isinstance(v, list)]
    mode = (plain.get("validation") or {}).get("mode", "test")
    if lists and mode != "heldout":
        raise FustalError(
            f"filter.{lists[0]}: a list of values is chosen on the held-out videos' segments;"
            f" hold them out with validation=heldout (this run has validation={mode})"
        )
    if node.get("_target_", FilterSchema._target_) != FilterSchema._target_:
        return
    for key in ("min_density", "min_score"):
        value = node.get(key)
        values = value if isinstance(value, list) else [value]
        if not values or not all(
            v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values
        ):
            raise FustalError(
                f"filter.{key}: expected a number, null (off) or a list of them, got {value!r}"
            )


def check_fusion(plain: Mapping[str, Any]) -> None:
    """``fusion`` settings that fit together: a score file for ``fusion=file``, a positive
    ``topk``, a known ``rule`` and ``level``, a ``vote_tiou`` in (0, 1], a ``class_weight`` in
    (0, 1) (:func:`~fustal.fusion.fusion_keywords`), fusion for a class-agnostic student (it
    predicts no classes of its own), and detection-level fusion only of the generator's
    detections into a class-agnostic student."""
    fusion = plain.get("fusion") or {}
    if fusion.get("source") == "file" and not fusion.get("score_file"):
        raise FustalError(
            "fusion.score_file: fusion=file needs a score file (fusion.score_file=PATH, JSON"
            ' {"results": {video_id: [class scores]}})'
        )
    settings = fusion_keywords({k: fusion[k] for k in KEYS if fusion.get(k) is not None})
    check_source(settings, fusion.get("source"))
    module = (plain.get("student") or {}).get("module") or {}
    if settings["level"] == "detections" and not module.get("class_agnostic"):
        raise FustalError(
            "fusion.level: detections gives classes to a class-agnostic student"
            " (student.module.class_agnostic=true)"
        )
    if module.get("class_agnostic") and not fusion.get("source"):
        raise FustalError(
            "student.module.class_agnostic: a class-agnostic student predicts no classes; fuse"
            " video-level scores (fusion=generator or fusion=file)"
        )


def check_plug_ins(plain: dict[str, Any]) -> dict[str, Any]:
    """Check every :data:`PLUG_INS` node that names a target of the user's: it imports, and its
    keys are arguments of that target (and its required arguments are set). Returns ``plain``
    with those nodes dropped, for the schema check of the rest (``plain`` itself when every
    plug-in is fustal's own)."""
    checked = plain
    for key, (schema, passed) in PLUG_INS.items():
        holder, leaf = holder_of(plain, key)
        node = holder.get(leaf) if isinstance(holder, dict) else None
        if not isinstance(node, dict) or node.get("_target_", schema._target_) == schema._target_:
            continue
        check_target_arguments(key, node, (*passed, *MODULE_ARGUMENTS))
        if checked is plain:
            checked = copy.deepcopy(plain)
        holder, _ = holder_of(checked, key)
        del holder[leaf]
    return checked


def check_target_arguments(key: str, node: Mapping[str, Any], passed: tuple[str, ...]) -> None:
    """``node`` (the config at ``key``) against the signature of its ``_target_``, a function or
    class of the user's; ``passed``: the arguments the pipeline fills in."""
    target = node["_target_"]
    if not isinstance(target, str) or not target:
        raise FustalError(f"{key}._target_: expected a dotted name, got {target!r}")
    try:
        obj = get_object(target)
    except Exception as err:  # ImportError, AttributeError, or an error inside their module
        cause = err.__cause__ or err
        reason = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        raise FustalError(
            f"{key}._target_: cannot import {target}: {reason} (is its folder the working"
            " directory or on PYTHONPATH?)"
        ) from None
    params = inspect.signature(obj).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    named = [
        n
        for n, p in params.items()
        if n not in passed and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]
    for name in node:
        if name in PLUG_IN_KEYS or name in named or takes_any:
            continue
        close = difflib.get_close_matches(name, named, n=1)
        hint = f" (did you mean {key}.{close[0]}?)" if close else ""
        takes = ", ".join(named) or "no configurable arguments"
        raise FustalError(f"{key}.{name}: unknown key, {target} takes {takes}{hint}")
    for name in named:
        if params[name].default is inspect.Parameter.empty and name not in node:
            raise FustalError(f"{key}.{name}: {target} needs this argument; set it")
