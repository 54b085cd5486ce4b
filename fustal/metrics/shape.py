"""The one shape of a run's metrics: flat, ``{"<model>.<subset>.<name>": value}`` (e.g.
``"student_ema.test.avg"``; a name may hold dots: ``"generator.test.mAP@0.5"``). Only the
``metrics.json`` files nest them: a run's by model and subset (:func:`nest`), a stage entry's
by section (:func:`sections`); :func:`flatten` reads either back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# the name of the video-level classification mAP in a val section (fustal.metrics.validation)
VIDEO_MAP = "video_map"


def flatten(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": {"c": 1}}}`` or ``{"a.b": {"c": 1}}`` -> ``{"a.b.c": 1}``."""
    out: dict[str, Any] = {}
    for key, value in nested.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def sections(flat: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"a.b.c": 1}`` -> ``{"a.b": {"c": 1}}``, sections in their first key's order."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        model, subset, name = key.split(".", 2)
        out.setdefault(f"{model}.{subset}", {})[name] = value
    return out


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b.c": 1}`` -> ``{"a": {"b": {"c": 1}}}`` (a run's ``metrics.json``)."""
    out: dict[str, Any] = {}
    for section, values in sections(flat).items():
        model, subset = section.split(".")
        out.setdefault(model, {})[subset] = values
    return out


def numbers(flat: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries of ``flat`` (not the booleans), as floats."""
    return {
        key: float(value)
        for key, value in flat.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
