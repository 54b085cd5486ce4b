"""Score fusion (fustal/fusion.py) and the ActivityNet student recipe's numerics: video-level
fusion against a loop transcription of ActionFormer's procedure, detection-level fusion against
loops, score files and their errors, boundary voting, label smoothing, the ActivityNet
experiment's pipeline, evaluation and prediction with its fusion."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from fustal.errors import FustalError
from fustal.fusion import (
    SCORE_FILE,
    fuse_detections,
    fuse_video,
    fusion_keywords,
    read_score_file,
    score_file_payload,
)
from fustal.student.decode import Levels, SegmentBatch, segment_voting
from fustal.student.losses import detection_losses
from tests.conftest import ANET_TINY, CONF_DIR, compose_train

CLASSES = ["a", "b", "c", "d"]


def fuse_loop(rows: np.ndarray, class_scores: np.ndarray, topk: int, rule: str) -> list:
    """ActionFormer's postprocessing, transcribed as loops: every proposal once per top-k class."""
    top = sorted(range(len(class_scores)), key=lambda c: -class_scores[c])[:topk]
    out = []
    for c in top:
        for _, score, start, end in rows:
            product = class_scores[c] * score
            out.append((c, math.sqrt(product) if rule == "sqrt" else product, start, end))
    return sorted(out, key=lambda r: -r[1])


@pytest.mark.parametrize("rule", ["sqrt", "product"])
@pytest.mark.parametrize("topk", [1, 2, 3])
def test_fusion_emits_each_proposal_once_per_top_class(rule: str, topk: int) -> None:
    rng = np.random.default_rng(topk)
    rows = np.column_stack(
        [np.zeros(6), rng.uniform(0.01, 1, 6), rng.uniform(0, 5, 6), rng.uniform(5, 9, 6)]
    )
    class_scores = rng.dirichlet(np.ones(4))
    got = fuse_video(rows, class_scores, topk, rule)
    want = np.array(fuse_loop(rows, class_scores, topk, rule))
    assert got.shape == (6 * topk, 4)
    np.testing.assert_allclose(got, want)
    assert set(got[:, 0].astype(int)) == set(np.argsort(-class_scores)[:topk])


def test_fusion_of_class_aware_rows_keeps_the_top_classes_own_rows() -> None:
    rows = np.array([[0, 0.9, 0, 1], [1, 0.8, 1, 2], [2, 0.7, 2, 3], [1, 0.1, 3, 4]])
    class_scores = np.array([0.1, 0.6, 0.05, 0.25])  # top 2: b, d
    got = fuse_video(rows, class_scores, topk=2, rule="product", class_agnostic=False)
    np.testing.assert_allclose(got, [[1, 0.48, 1, 2], [1, 0.06, 3, 4]])
    # more classes than the video has: all of them
    assert fuse_video(rows[:1], class_scores, topk=9).shape == (4, 4)
    assert fuse_video(np.zeros((0, 4)), class_scores, topk=2).shape == (0, 4)


def test_fusion_rule_is_checked() -> None:
    with pytest.raises(FustalError, match="fusion.rule"):
        fuse_video(np.ones((1, 4)), np.ones(2), rule="max")


def fuse_detections_loop(
    rows: np.ndarray, dets: np.ndarray, vote_tiou: float, class_weight: float = 0.5
) -> list:
    """Detection-level fusion as loops: per class of ``dets`` and per row, the best overlap
    times score, and the boundary vote of the row and the detections overlapping it; the fused
    score ``q ** class_weight * score ** (1 - class_weight)``."""
    out = []
    for c in sorted({int(d[0]) for d in dets}):
        for _, score, start, end in rows:
            q, num_s, num_e, den = 0.0, 0.0, 0.0, 0.0
            for dc, ds, d0, d1 in dets:
                if int(dc) != c:
                    continue
                inter = max(0.0, min(end, d1) - max(start, d0))
                union = (end - start) + (d1 - d0) - inter
                t = inter / union if union > 0 else 0.0
                w = t * max(ds, 0.0)
                q = max(q, w)
                if t >= vote_tiou:
                    num_s, num_e, den = num_s + w * d0, num_e + w * d1, den + w
            if q > 0:
                den += q
                fused = math.exp(class_weight * math.log(q) + (1 - class_weight) * math.log(score))
                out.append((c, fused, (num_s + q * start) / den, (num_e + q * end) / den))
    return sorted(out, key=lambda r: -r[1])


@pytest.mark.parametrize(("vote_tiou", "class_weight"), [(0.3, 0.5), (0.6, 0.75), (1.0, 0.2)])
def test_detection_fusion_against_loops(vote_tiou: float, class_weight: float) -> None:
    rng = np.random.default_rng(int(10 * vote_tiou))
    starts = 30.0 * np.arange(12) + rng.uniform(0, 5, 12)  # disjoint rows
    rows = np.column_stack(
        [np.zeros(12), rng.uniform(0.01, 1, 12), starts, starts + rng.uniform(1, 20, 12)]
    )
    # the generator's detections: near the first 8 rows, two classes, a few negative scores
    near = rows[rng.integers(0, 8, 15), 2:4] + rng.normal(0, 2, (15, 2))
    near[:, 1] = np.maximum(near[:, 1], near[:, 0] + 0.5)
    dets = np.column_stack([rng.integers(0, 2, 15) * 3, rng.uniform(-0.2, 0.9, 15), near])
    got = fuse_detections(rows, dets, vote_tiou, class_weight=class_weight)
    want = np.array(fuse_detections_loop(rows, dets, vote_tiou, class_weight))
    assert 0 < len(got) <= 2 * 8  # rows that overlap nothing of a class are dropped
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert set(got[:, 0].astype(int)) <= {0, 3}


def test_detection_fusion_votes_boundaries_and_classes() -> None:
    rows = np.array([[0, 0.8, 0.0, 10.0], [0, 0.4, 20.0, 30.0], [0, 0.9, 40.0, 45.0]])
    dets = np.array([[3, 0.5, 1.0, 10.0], [3, 0.2, 0.0, 11.0], [5, 0.9, 21.0, 30.0], [5, -1, 0, 9]])
    got = fuse_detections(rows, dets, vote_tiou=0.6)
    # row 0 -> class 3: q = 0.9 * 0.5; boundaries (q [0, 10] + 0.45 [1, 10] + 0.2 * 10/11 [0, 11])
    w = 0.2 * 10 / 11
    np.testing.assert_allclose(
        got,
        [
            [3, math.sqrt(0.45 * 0.8), 0.45 / (0.9 + w), (9.0 + 11 * w) / (0.9 + w)],
            [5, math.sqrt(0.81 * 0.4), 20.5, 30.0],
        ],
    )
    # above every overlap: the rows keep their own boundaries
    kept = fuse_detections(rows, dets, vote_tiou=1.0)
    np.testing.assert_allclose(kept[:, 2:4], [[0.0, 10.0], [20.0, 30.0]])
    # the generator's class evidence weighted 0.75: 0.45^0.75 * 0.8^0.25 < 0.81^0.75 * 0.4^0.25,
    # so the order of the two rows flips
    weighted = fuse_detections(rows, dets, vote_tiou=1.0, class_weight=0.75)
    np.testing.assert_allclose(weighted[:, 0], [5, 3])
    np.testing.assert_allclose(weighted[:, 1], [0.81**0.75 * 0.4**0.25, 0.45**0.75 * 0.8**0.25])
    assert fuse_detections(rows, np.zeros((0, 4))).shape == (0, 4)
    assert fuse_detections(np.zeros((0, 4)), dets).shape == (0, 4)


def test_fusion_keywords_are_checked() -> None:
    assert fusion_keywords({"topk": 1}) == {
        "topk": 1,
        "rule": "sqrt",
        "level": "video",
        "vote_tiou": 0.6,
        "class_weight": 0.5,
    }
    # the defaults are the schema's, and the fusion group files list them
    defaults = fusion_keywords({})
    for name in ("none", "file", "generator"):
        listed = OmegaConf.load(CONF_DIR / "fusion" / f"{name}.yaml")
        assert {k: listed[k] for k in defaults} == defaults, name
    for bad, needle in (
        ({"level": "segment"}, "fusion.level"),
        ({"vote_tiou": 0}, "fusion.vote_tiou"),
        ({"vote_tiou": 1.5}, "fusion.vote_tiou"),
        ({"class_weight": 1.0}, "fusion.class_weight: must be in"),
        ({"rule": "product", "class_weight": 0.75}, "rule=product multiplies"),
        ({"top": 2}, "unknown keys"),
    ):
        with pytest.raises(FustalError, match=needle):
            fusion_keywords(bad)


def write(path: Path, payload: object) -> Path:
    path.write_text(json.dumps(payload))
    return path


def test_score_file_round_trip_and_class_order(tmp_path: Path) -> None:
    scores = {"v1": np.array([0.1, 0.2, 0.3, 0.4]), "v2": np.array([0.4, 0.3, 0.2, 0.1])}
    path = write(tmp_path / "s.json", score_file_payload(scores, CLASSES))
    back = read_score_file(path, CLASSES, ["v1", "v2"])
    assert set(back) == {"v1", "v2"}
    for vid in scores:
        np.testing.assert_array_equal(back[vid], scores[vid])  # full precision
    # the file's own class order is followed; extra classes are ignored
    shuffled = write(
        tmp_path / "shuffled.json",
        {"results": {"v1": [9.0, 0.4, 0.3, 0.2, 0.1]}, "class": ["x", "d", "c", "b", "a"]},
    )
    np.testing.assert_array_equal(
        read_score_file(shuffled, CLASSES, ["v1"])["v1"], [0.1, 0.2, 0.3, 0.4]
    )
    # ActionFormer's bare mapping, in the dataset's order; optional videos only where present
    bare = write(tmp_path / "bare.json", {"v1": [1, 2, 3, 4]})
    assert set(read_score_file(bare, CLASSES, ["v1"], optional=["v1", "v9"])) == {"v1"}


@pytest.mark.parametrize(
    "payload, needle",
    [
        ([1, 2], "expected a JSON object"),
        ({"results": [1]}, "'results' must map"),
        ({"results": {"v1": [1, 2, 3, 4]}}, "no video-level class scores for video v2"),
        ({"results": {"v1": [1, 2, 3], "v2": [1, 2, 3, 4]}}, "video v1: expected 4 class scores"),
        ({"results": {"v1": [1, 2, 3, "x"], "v2": [1, 2, 3, 4]}}, "video v1: class scores are"),
        ({"results": {"v1": [1, 2, 3, None], "v2": [1, 2, 3, 4]}}, "video v1: class scores"),
        ({"results": {"v1": [[1, 2, 3, 4]], "v2": [1, 2, 3, 4]}}, "video v1: expected 4"),
        ({"results": {"v1": [1, 2, 3, float("nan")], "v2": [0] * 4}}, "video v1: class scores"),
        ({"results": {"v1": [1, 2, 3], "v2": [1, 2, 3]}, "class": ["a", "b", "c"]}, "class 'd'"),
    ],
)
def test_bad_score_file_is_one_clear_error(tmp_path: Path, payload: object, needle: str) -> None:
    path = write(tmp_path / "bad.json", payload)
    with pytest.raises(FustalError) as err:
        read_score_file(path, CLASSES, ["v1", "v2"])
    message = str(err.value)
    assert str(path) in message and needle in message and "\n" not in message


def test_missing_or_invalid_score_file(tmp_path: Path) -> None:
    with pytest.raises(FustalError, match="not found|No such"):
        read_score_file(tmp_path / "nope.json", CLASSES, ["v1"])
    bad = tmp_path / "broken.json"
    bad.write_text("{")
    with pytest.raises(FustalError, match=str(bad)):
        read_score_file(bad, CLASSES, ["v1"])


def test_segment_voting_averages_overlapping_candidates_of_the_same_class() -> None:
    cands = SegmentBatch(
        torch.tensor([[[0.0, 10.0], [1.0, 10.0], [0.0, 9.0], [20.0, 30.0], [0.0, 10.0]]]),
        torch.tensor([[0.9, 0.6, 0.3, 0.8, 0.5]]),
        torch.tensor([[0, 0, 0, 0, 1]]),
        torch.tensor([[True, True, True, True, False]]),
    )
    dets = SegmentBatch(
        torch.tensor([[[0.0, 10.0], [20.0, 30.0]]]),
        torch.tensor([[0.9, 0.8]]),
        torch.tensor([[0, 0]]),
        torch.tensor([[True, True]]),
    )
    voted = segment_voting(dets, cands, iou_thresh=0.85)
    # the first detection: itself, [1, 10] and [0, 9] (tIoU 0.9 each) vote, weighted by their
    # scores; the invalid class-1 copy of it does not
    weights = np.array([0.9, 0.6, 0.3])
    want = (weights[:, None] * np.array([[0, 10], [1, 10], [0, 9]])).sum(0) / weights.sum()
    np.testing.assert_allclose(voted.segments[0, 0].numpy(), want, rtol=1e-6)
    np.testing.assert_allclose(voted.segments[0, 1].numpy(), [20, 30])  # alone: unchanged
    assert torch.equal(voted.scores, dets.scores) and torch.equal(voted.labels, dets.labels)
    strict = segment_voting(dets, cands, iou_thresh=0.95)  # only itself
    torch.testing.assert_close(strict.segments, dets.segments)


def test_label_smoothing_softens_every_valid_points_targets() -> None:
    torch.manual_seed(0)
    batch, points, classes, bins = 2, 8, 3, 4
    levels = Levels(
        [torch.randn(batch, points, classes)],
        [torch.randn(batch, points, classes)],
        [torch.randn(batch, points, classes)],
        [torch.rand(batch, points, 2, bins + 1)],
        [torch.ones(batch, points, dtype=torch.bool)],
    )
    cls_targets = torch.zeros(batch, points, classes)
    cls_targets[0, 3, 1] = 1.0
    reg_targets = torch.full((batch, points, 2), 2.0)
    plain = detection_losses(levels, cls_targets, reg_targets, 1.0, bins)
    smooth = detection_losses(levels, cls_targets, reg_targets, 1.0, bins, label_smoothing=0.1)
    zero = detection_losses(levels, cls_targets, reg_targets, 1.0, bins, label_smoothing=0.0)
    assert torch.equal(plain["cls"], zero["cls"]) and torch.equal(plain["reg"], smooth["reg"])
    # by hand: focal loss against t * 0.9 + 0.1 / 4, IoU weight on the one positive
    from fustal.student.decode import trident_offsets
    from fustal.student.losses import center_iou, sigmoid_focal_loss

    target = cls_targets * 0.9 + 0.1 / (classes + 1)
    focal = sigmoid_focal_loss(levels.cls_logits[0], target)
    pred = trident_offsets(levels.start_logits[0], levels.end_logits[0], levels.offsets[0], bins)
    iou = center_iou(pred, reg_targets[:, :, None].expand_as(pred)).clamp(min=1e-6)
    weight = torch.where(cls_targets > 0, iou**0.2, torch.ones_like(iou))
    torch.testing.assert_close(smooth["cls"], (focal * weight).sum())


# ---------------------------------------------------------------- through the pipeline

ANET_KEYS = [f"mAP@{t:g}" for t in np.linspace(0.5, 0.95, 10).round(2)] + ["avg"]


@dataclass
class AnetRun:
    """One tiny ``+experiment=activitynet13_synthetic`` run (class-agnostic student, fusion of
    the generator's detections): its dirs, metrics, printed output and checkpoints."""

    tmp: Path
    metrics: dict
    out: str
    student: Path
    generator: Path
    data_root: Path

    @property
    def run(self) -> Path:
        return self.tmp / "run"


@pytest.fixture(scope="module")
def anet(tmp_path_factory: pytest.TempPathFactory) -> AnetRun:
    from contextlib import redirect_stdout
    from io import StringIO

    from fustal.pipeline.run import run_pipeline

    tmp = tmp_path_factory.mktemp("anet_fusion")
    cfg = compose_train(tmp, *ANET_TINY, debug=False)
    assert cfg.generator.data.num_segments == 32 and cfg.student.module.net.max_seq_len == 32
    assert cfg.fusion.source == "generator" and cfg.student.module.class_agnostic
    printed = StringIO()
    with redirect_stdout(printed):
        metrics = run_pipeline(cfg)
    (student,) = (tmp / "cache" / "student").glob("*/student.ckpt")
    (generator,) = (tmp / "cache" / "generator").glob("*/generator.ckpt")
    (data_root,) = (tmp / "data" / "synthetic").iterdir()
    return AnetRun(tmp, metrics, printed.getvalue(), student, generator, data_root)


def database(run: AnetRun) -> dict:
    return json.loads((run.data_root / "annotations" / "activitynet13.json").read_text())[
        "database"
    ]


def test_activitynet_experiment_end_to_end(anet: AnetRun) -> None:
    """All three stages on ActivityNet-shaped data, ActivityNet's thresholds in the metrics and
    the printed table, the generator's video-level scores fused into the student's detections."""
    for section in ("generator", "student", "student_ema"):
        assert list(anet.metrics[section]["test"]) == ANET_KEYS, section
    for kind in ("raw", "filtered"):
        assert set(ANET_KEYS) <= set(anet.metrics["pseudo_labels"][kind])
    assert json.loads((anet.run / "metrics.json").read_text()) == anet.metrics
    assert all(column in anet.out for column in ("@0.5", "@0.75", "@0.95", "avg 0.5:0.95"))
    said = " ".join(anet.out.split())  # the console wraps long lines
    assert (
        "class-agnostic; classes, scores and boundary votes (tIoU >= 0.6) fused from the"
        " generator's detections" in said
    )

    classes = sorted({a["label"] for e in database(anet).values() for a in e["annotations"]})
    scores = json.loads((anet.run / SCORE_FILE).read_text())
    assert scores["class"] == classes and set(scores["results"]) == set(database(anet))
    detections = json.loads((anet.run / "student_ema_test.json").read_text())["results"]
    generator = json.loads((anet.run / "generator_test.json").read_text())["results"]
    test_videos = {v for v, e in database(anet).items() if e["subset"] == "validation"}
    assert set(detections) == test_videos
    for vid, entries in detections.items():
        # the classes of the generator's detections of the video, each fused segment
        # overlapping one of them
        assert {e["label"] for e in entries} <= {e["label"] for e in generator[vid]}, vid
        for e in entries:
            start, end = e["segment"]
            assert any(
                g["label"] == e["label"] and g["segment"][0] < end and start < g["segment"][1]
                for g in generator[vid]
            ), vid


def evaluate(run: AnetRun, name: str, *overrides: str) -> dict:
    from fustal.evaluate import run as run_evaluate

    out = f"paths.output_dir={run.tmp / name}"
    cfg = compose_train(run.tmp, *ANET_TINY, out, *overrides, config="evaluate", debug=False)
    return run_evaluate(cfg)


def test_evaluate_fuses_like_the_pipeline(anet: AnetRun, capsys: pytest.CaptureFixture) -> None:
    ckpt = f"ckpt_path={anet.student}"
    # the experiment's fusion=generator_detections: the cached generator's detections
    cached = evaluate(anet, "eval_cached", ckpt)
    for section in ("student", "student_ema"):
        got, want = cached[section]["test"], anet.metrics[section]["test"]
        assert got == pytest.approx(want, abs=1e-6), section
    # video-level fusion: the cached generator's scores and the same scores from a file agree
    by_video = evaluate(anet, "eval_video", ckpt, "fusion=generator")
    from_file = evaluate(
        anet, "eval_file", ckpt, "fusion=file", f"fusion.score_file={anet.run / SCORE_FILE}"
    )
    for section in ("student", "student_ema"):
        assert by_video[section]["test"] == pytest.approx(from_file[section]["test"], abs=1e-6)
    assert by_video["student"]["test"] != cached["student"]["test"]
    # top-1 with the plain product: other detections, fewer of them
    top1 = evaluate(
        anet, "eval_top1", ckpt, "fusion=generator", "fusion.topk=1", "fusion.rule=product"
    )
    assert top1["student"]["test"] != by_video["student"]["test"]
    one = json.loads((anet.tmp / "eval_top1" / "student_test.json").read_text())["results"]
    two = json.loads((anet.tmp / "eval_video" / "student_test.json").read_text())["results"]
    assert all(2 * len(one[vid]) == len(two[vid]) for vid in two)
    # a class-agnostic student without fusion, an incomplete score file: one line each
    incomplete = anet.tmp / "incomplete.json"
    payload = json.loads((anet.run / SCORE_FILE).read_text())
    dropped = sorted(v for v, e in database(anet).items() if e["subset"] == "validation")[0]
    del payload["results"][dropped]
    incomplete.write_text(json.dumps(payload))
    for overrides, needles in (
        (["fusion=none", "student.module.class_agnostic=false"], ["class-agnostic", "fusion"]),
        (["fusion=file", f"fusion.score_file={incomplete}"], [str(incomplete), dropped]),
    ):
        with pytest.raises(SystemExit) as exited:
            evaluate(anet, "eval_bad", ckpt, *overrides)
        assert exited.value.code == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith("error: ") and all(n in line for n in needles), line


def predict(*overrides: str) -> dict:
    from hydra import compose, initialize

    from fustal.predict import CONFIG_NAME
    from fustal.predict import run as run_predict

    with initialize(config_path=None, version_base="1.3"):
        cfg = compose(CONFIG_NAME, overrides=["trainer.enable_progress_bar=false", *overrides])
    return run_predict(cfg)


def test_predict_fuses_generator_or_file_scores(
    anet: AnetRun, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    videos = sorted(v for v, e in database(anet).items() if e["subset"] == "validation")[:3]
    features = tmp_path / "features"
    features.mkdir()
    for vid in videos:
        (features / f"{vid}.npy").write_bytes(
            (anet.data_root / "features" / f"v_{vid}.npy").read_bytes()
        )
    durations = tmp_path / "durations.json"
    durations.write_text(json.dumps({v: database(anet)[v]["duration"] for v in videos}))
    common = (f"ckpt_path={anet.student}", f"features={features}", f"durations={durations}")
    want = json.loads((anet.student.parent / "student_ema_test.json").read_text())["results"]

    generator = ("fusion.source=generator", f"fusion.generator_ckpt={anet.generator}")
    score_file = ("fusion.source=file", f"fusion.score_file={anet.run / SCORE_FILE}")
    # the checkpoint's fusion (the generator's detections), and video-level fusion two ways
    by_detections = predict(*common, f"out={tmp_path / 'det.json'}", *generator)["results"]
    video = "fusion.level=video"
    by_generator = predict(*common, f"out={tmp_path / 'gen.json'}", *generator, video)["results"]
    by_file = predict(*common, f"out={tmp_path / 'file.json'}", *score_file, video)["results"]
    for results, ref_results in ((by_detections, want), (by_file, by_generator)):
        assert set(results) == set(videos)
        for vid in videos:
            labels = {e["label"] for e in ref_results[vid]}
            assert {e["label"] for e in results[vid]} == labels, vid
            for label in labels:  # per class, each column sorted: equal up to float rounding
                got, ref = (
                    np.sort([[e["score"], *e["segment"]] for e in dets if e["label"] == label], 0)
                    for dets in (results[vid], ref_results[vid])
                )
                np.testing.assert_allclose(got, ref, atol=1e-4)
    assert by_generator != by_detections

    # neither scores nor a generator, a generator checkpoint without its features, a bad file
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({"results": {v: [0.5] * (1 if v == videos[0] else 3) for v in videos}})
    )
    out = tmp_path / "never.json"
    for overrides, needles in (
        ([], ["class-agnostic", "fusion.source=generator", "fusion.source=file"]),
        (["fusion.source=generator"], ["fusion.generator_ckpt"]),
        (["fusion.source=file", f"fusion.score_file={bad}", video], [str(bad), videos[0]]),
        ([*score_file], ["fusion.level", "fusion.source=generator"]),
    ):
        with pytest.raises(SystemExit) as exited:
            predict(*common, f"out={out}", *overrides)
        assert exited.value.code == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith("error: ") and all(n in line for n in needles), line
        assert not out.exists()


def test_fusion_settings_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    from fustal.config.checks import check_config

    for overrides, needle in (
        (["student.module.class_agnostic=true"], "class-agnostic student predicts no classes"),
        (["fusion=file"], "fusion.score_file"),
        (["fusion=generator", "fusion.topk=0"], "fusion.topk"),
        (["fusion=generator", "fusion.rule=max"], "fusion.rule"),
        (["fusion=generator", "fusion.vote_tiou=0"], "fusion.vote_tiou"),
        (["fusion=generator", "fusion.class_weight=0"], "fusion.class_weight"),
        (["fusion=generator", "fusion.level=frame"], "fusion.level"),
        (["fusion=generator_detections"], "class-agnostic student"),
        (
            ["fusion=file", "fusion.score_file=s.json", "fusion.level=detections"],
            "fusion.source=generator",
        ),
    ):
        with pytest.raises(FustalError, match=needle):
            check_config(compose_train(tmp_path, *overrides))
    for fusion in ("fusion=generator", "fusion=generator_detections"):
        check_config(compose_train(tmp_path, fusion, "student.module.class_agnostic=true"))
