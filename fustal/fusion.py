"""Video-level score fusion: classes for a detector's segments from a video-level classifier.

Strong ActivityNet detectors localize class-agnostically and take classes from an external
video classifier (ActionFormer and TriDet: for each video the top-2 classes of the classifier,
every proposal emitted once per class with score ``sqrt(class_score * proposal_score)``; OpenTAD:
the plain product). In weak supervision fustal owns such a classifier: the generator is trained on
exactly the video-level labels, and its ``video_scores`` are written next to its detections
(:data:`SCORE_FILE`).

Detection-level fusion (``fusion.level=detections``) goes one step further: the generator also
localizes, and far more precisely at strict tIoU than a student trained on its pseudo labels, but
with far more false positives. Each student segment takes its classes, class scores and a vote on
its boundaries from the generator's detections that overlap it (:func:`fuse_detections`). No
detector library fuses two detectors' outputs this way, so it is written here.

A score file has ActionFormer's schema: ``{"results": {video_id: [C scores]}, "class": [names]}``
(the ``"class"`` list is optional: without it the scores are in the dataset's class order; a
top-level object without ``"results"`` is read as the mapping itself).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, overload

import numpy as np

from fustal.config.schema import FusionSchema
from fustal.errors import FustalError
from fustal.io import read_json
from fustal.segments import tiou_matrix

RULES = ("sqrt", "product")
# what the classes come from: the video-level scores, or the classifier's detections
LEVELS = ("video", "detections")
# the settings of a fusion (:func:`fusion_keywords`), as in the ``fusion`` config node
KEYS = ("topk", "rule", "level", "vote_tiou", "class_weight")
# the generator stage's detections of the test videos (what ``level=detections`` fuses)
DETECTION_FILE = "generator_test.json"
# what a fusion fuses into a student's detections: video-level class scores ``{video: [C]}``
# and the generator's detections ``{video: [P, 4]}`` (None: not fused)
FusionInputs = tuple[Mapping[str, np.ndarray] | None, Mapping[str, np.ndarray] | None]
# the generator stage's video-level class scores (training and test videos), ActionFormer schema
SCORE_FILE = "generator_video_scores.json"
# videos named in an error about missing scores
SHOWN_MISSING = 3
# the class weight at which the sqrt rule is the square root sqrt(class * detection)
SQUARE_ROOT = 0.5


def combine(
    class_scores: np.ndarray, scores: np.ndarray, rule: str, class_weight: float = SQUARE_ROOT
) -> np.ndarray:
    """The fused score of a detection scoring ``scores`` for a class scoring ``class_scores``
    (broadcast): ``sqrt``, the geometric mean ``class ** w * detection ** (1 - w)`` with
    ``w = class_weight`` (0.5: ``sqrt(class * detection)``, ActionFormer, TriDet), or
    ``product``, ``class * detection`` (OpenTAD)."""
    if rule == "sqrt" and class_weight == SQUARE_ROOT:
        return np.sqrt(class_scores * scores)  # the detectors' rule, bit for bit
    if rule == "sqrt":
        return class_scores**class_weight * scores ** (1.0 - class_weight)
    if rule == "product":
        return class_scores * scores
    raise FustalError(f"fusion.rule: expected one of {', '.join(RULES)}, got {rule!r}")


def config_fusion(fusion_cfg: Mapping[str, Any]) -> dict[str, Any] | None:
    """The fusion settings of a ``fusion`` config node (:func:`fusion_keywords` of its set
    keys); None without a ``source``."""
    if not fusion_cfg.get("source"):
        return None
    return fusion_keywords({k: fusion_cfg[k] for k in KEYS if fusion_cfg.get(k) is not None})


@overload
def fusion_keywords(fusion: None) -> None: ...
@overload
def fusion_keywords(fusion: Mapping[str, Any]) -> dict[str, Any]: ...
def fusion_keywords(fusion: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The fusion settings, checked and completed (the one check of them, for configs, modules
    and checkpoints): ``level`` (``video``: :func:`fuse_video` with ``topk``; ``detections``:
    :func:`fuse_detections` with ``vote_tiou``), ``rule`` and ``class_weight``; None: no
    fusion."""
    if fusion is None:
        return None
    unknown = sorted(set(fusion) - set(KEYS))
    if unknown:
        raise FustalError(f"fusion: unknown keys {unknown} (expected {', '.join(KEYS)})")
    default = FusionSchema()
    topk, rule = int(fusion.get("topk", default.topk)), str(fusion.get("rule", default.rule))
    level = str(fusion.get("level", default.level))
    vote_tiou = float(fusion.get("vote_tiou", default.vote_tiou))
    class_weight = float(fusion.get("class_weight", default.class_weight))
    if topk < 1:
        raise FustalError(f"fusion.topk: must be at least 1, got {topk}")
    if rule not in RULES:
        raise FustalError(f"fusion.rule: expected one of {', '.join(RULES)}, got {rule!r}")
    if level not in LEVELS:
        raise FustalError(f"fusion.level: expected one of {', '.join(LEVELS)}, got {level!r}")
    if not 0 < vote_tiou <= 1:
        raise FustalError(f"fusion.vote_tiou: must be in (0, 1], got {vote_tiou}")
    if not 0 < class_weight < 1:
        raise FustalError(f"fusion.class_weight: must be in (0, 1), got {class_weight}")
    if rule == "product" and class_weight != default.class_weight:
        raise FustalError(
            f"fusion.class_weight: weighs the sqrt rule's geometric mean; rule=product"
            f" multiplies the scores (leave class_weight at {default.class_weight})"
        )
    return {
        "topk": topk,
        "rule": rule,
        "level": level,
        "vote_tiou": vote_tiou,
        "class_weight": class_weight,
    }


def fusion_described(fusion: Mapping[str, Any], source: str) -> str:
    """The checked settings in words, for the logs (``source``: where the class evidence comes
    from, e.g. ``the generator``)."""
    weight, rule = fusion["class_weight"], str(fusion["rule"])
    if rule == "sqrt" and weight != SQUARE_ROOT:
        rule = f"class^{weight:g} * detection^{1 - weight:g}"
    if fusion["level"] == "video":
        return f"classes fused from {source}'s video-level scores (top {fusion['topk']}, {rule})"
    return (
        f"classes, scores and boundary votes (tIoU >= {fusion['vote_tiou']}) fused from"
        f" {source}'s detections ({rule})"
    )


def check_source(fusion: Mapping[str, Any], source: str | None) -> None:
    """Detection-level fusion needs detections to fuse: the generator's (a score file holds
    video-level scores only)."""
    if fusion["level"] == "detections" and source != "generator":
        raise FustalError(
            "fusion.level: detections fuses the generator's detections; it needs"
            f" fusion.source=generator (got {source!r})"
        )


def fuse(
    rows: np.ndarray,
    class_scores: np.ndarray,
    class_detections: np.ndarray | None,
    fusion: Mapping[str, Any],
    class_agnostic: bool = True,
) -> np.ndarray:
    """One video's detections fused as the checked ``fusion`` settings say
    (:func:`fusion_keywords`): with its video-level ``class_scores [C]`` (``level=video``) or
    with the classifier's detections ``class_detections [P, 4]`` (``level=detections``, for a
    class-agnostic detector only)."""
    if fusion["level"] == "video":
        return fuse_video(
            rows,
            class_scores,
            fusion["topk"],
            fusion["rule"],
            class_agnostic,
            fusion["class_weight"],
        )
    if not class_agnostic:
        raise FustalError("fusion.level=detections: fuses a class-agnostic student only")
    if class_detections is None:
        raise FustalError("fusion.level=detections: no detections of the classifier to fuse")
    return fuse_detections(
        rows, class_detections, fusion["vote_tiou"], fusion["rule"], fusion["class_weight"]
    )


def fuse_video(
    rows: np.ndarray,
    class_scores: np.ndarray,
    topk: int = 2,
    rule: str = "sqrt",
    class_agnostic: bool = True,
    class_weight: float = SQUARE_ROOT,
) -> np.ndarray:
    """Fuse one video's detections with its video-level class scores.

    ``rows [K, 4]`` ``(class_index, score, start, end)``, ``class_scores [C]`` -> fused rows
    ``[K', 4]`` sorted by fused score (descending, stable). The video's ``topk`` best classes are
    kept. Class-agnostic rows (their class column is ignored) are emitted once per kept class
    (``K' = topk * K``); class-aware rows are kept for their own class when it is one of the
    kept ones. Each fused score is :func:`combine` of the class's and the row's score.
    """
    rows = np.asarray(rows, np.float64).reshape(-1, 4)
    class_scores = np.asarray(class_scores, np.float64).reshape(-1)
    k = min(int(topk), class_scores.shape[0])
    top = np.argsort(-class_scores, kind="stable")[:k]  # [k]
    if class_agnostic:
        labels = np.repeat(top, rows.shape[0])  # class-major: [k * K]
        base = np.tile(rows, (k, 1))
    else:
        base = rows[np.isin(rows[:, 0].astype(np.int64), top)]
        labels = base[:, 0].astype(np.int64)
    fused = base.copy()
    fused[:, 0] = labels
    fused[:, 1] = combine(class_scores[labels], base[:, 1], rule, class_weight)
    return fused[np.argsort(-fused[:, 1], kind="stable")]


def fuse_detections(
    rows: np.ndarray,
    detections: np.ndarray,
    vote_tiou: float = 0.6,
    rule: str = "sqrt",
    class_weight: float = SQUARE_ROOT,
) -> np.ndarray:
    """Fuse one video's class-agnostic detections with another detector's class-aware ones.

    ``rows [K, 4]`` ``(ignored class, score, start, end)`` (the student's), ``detections
    [P, 4]`` ``(class, score, start, end)`` (the generator's; negative scores count as 0) ->
    fused rows ``[K', 4]`` sorted by fused score (descending, stable). For each class ``c`` of
    ``detections`` and each row ``s``: the class score ``q = max_p tIoU(s, p) * score_p`` over
    the detections ``p`` of ``c``; a row with ``q > 0`` is emitted for ``c`` with score
    :func:`combine` ``(q, score_s, rule, class_weight)``, its boundaries the weighted mean of its
    own (weight ``q``) and those of the detections of ``c`` that overlap it by
    ``tIoU >= vote_tiou`` (weight ``tIoU * score_p``). A row overlapping no detection is
    dropped.
    """
    rows = np.asarray(rows, np.float64).reshape(-1, 4)
    detections = np.asarray(detections, np.float64).reshape(-1, 4)
    classes, member = np.unique(detections[:, 0].astype(np.int64), return_inverse=True)
    onehot = np.eye(len(classes))[member.reshape(-1)]  # [P, C']
    weight = tiou_matrix(rows[:, 2:4], detections[:, 2:4])  # [K, P] tIoU
    votes = np.where(weight >= vote_tiou, 1.0, 0.0)
    weight *= np.clip(detections[:, 1], 0.0, None)[None, :]  # tIoU * score
    q = (weight[:, :, None] * onehot[None]).max(axis=1, initial=0.0)  # [K, C']
    votes *= weight
    total = votes @ onehot + q  # [K, C']
    bounds = np.einsum("kp,pc,pj->kcj", votes, onehot, detections[:, 2:4])
    bounds += q[:, :, None] * rows[:, None, 2:4]
    k, c = np.nonzero(q > 0)
    bounds = bounds[k, c] / total[k, c, None]
    fused = np.column_stack([classes[c], combine(q[k, c], rows[k, 1], rule, class_weight), bounds])
    return fused[np.argsort(-fused[:, 1], kind="stable")]


def read_score_file(
    path: str | os.PathLike,
    classes: Sequence[str],
    videos: Sequence[str],
    optional: Sequence[str] = (),
) -> dict[str, np.ndarray]:
    """Video-level class scores ``{video_id: [C] float64}`` of ``videos`` (and of those of
    ``optional`` that the file has) from a score file, in the order of ``classes``. A file that
    is missing or not the schema, a video whose entry is not ``C`` finite numbers, a class of
    ``classes`` absent from the file's ``"class"`` list, or a video of ``videos`` without scores
    is a :class:`FustalError` naming the file and the video or class."""
    data = read_json(path, "score file")
    if not isinstance(data, Mapping):
        raise FustalError(f"{path}: expected a JSON object {{'results': {{video_id: [scores]}}}}")
    results = data.get("results", data)
    if not isinstance(results, Mapping):
        raise FustalError(f"{path}: 'results' must map video ids to lists of class scores")
    names = data.get("class") if "results" in data else None
    columns = _columns(path, names, classes)
    width = len(columns) if names is None else len(names)
    missing = [vid for vid in videos if vid not in results]
    if missing:
        shown = ", ".join(missing[:SHOWN_MISSING])
        more = f" and {len(missing) - SHOWN_MISSING} more" if len(missing) > SHOWN_MISSING else ""
        raise FustalError(
            f"{path}: no video-level class scores for video {shown}{more}"
            f" ({len(missing)} of {len(videos)} videos missing)"
        )
    return {
        vid: _score_row(path, vid, results[vid], width)[columns]
        for vid in [*videos, *(v for v in optional if v in results)]
    }


def _columns(path: Any, names: Any, classes: Sequence[str]) -> np.ndarray:
    """Column of each of ``classes`` in the file's rows (its ``"class"`` list, else in order)."""
    if names is None:
        return np.arange(len(classes))
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise FustalError(f"{path}: 'class' must be a list of class names")
    index = {name: i for i, name in enumerate(names)}
    absent = [c for c in classes if c not in index]
    if absent:
        raise FustalError(
            f"{path}: class {absent[0]!r} of the dataset is not in the file's 'class' list"
            f" ({len(absent)} of {len(classes)} classes absent)"
        )
    return np.array([index[c] for c in classes], dtype=np.int64)


def _score_row(path: Any, vid: str, entry: Any, width: int) -> np.ndarray:
    """One video's scores as ``[width]`` finite float64, or a :class:`FustalError` naming it."""
    try:
        values = np.asarray(entry, dtype=np.float64)
    except (TypeError, ValueError):
        raise FustalError(f"{path}: video {vid}: class scores are not numbers") from None
    if values.ndim != 1 or values.shape[0] != width:
        got = values.shape[0] if values.ndim == 1 else f"shape {values.shape}"
        raise FustalError(f"{path}: video {vid}: expected {width} class scores, got {got}")
    if not np.isfinite(values).all():
        raise FustalError(f"{path}: video {vid}: class scores must be finite numbers")
    return values


def score_file_payload(scores: Mapping[str, np.ndarray], classes: Sequence[str]) -> dict:
    """The JSON of a score file (ActionFormer's schema plus the class names; full precision, so
    that scores read back equal the ones in memory)."""
    return {
        "results": {vid: [float(v) for v in row] for vid, row in scores.items()},
        "class": list(classes),
    }
