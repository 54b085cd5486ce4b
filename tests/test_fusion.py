"""Video-level score fusion (fustal/fusion.py) and the ActivityNet student recipe's numerics:
fusion against a loop transcription of ActionFormer's procedure, score files and their errors,
boundary voting, label smoothing, a class-agnostic student module."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from fustal.errors import FustalError
from fustal.fusion import SCORE_FILE, fuse_video, read_score_file, score_file_payload
from fustal.student.decode import Levels, SegmentBatch, segment_voting
from fustal.student.losses import detection_losses
from tests.conftest import ANET_TINY, compose_train

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
    the generator's video-level scores): its dirs, metrics, printed output and checkpoints."""

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
    assert "class-agnostic; classes fused from the generator's video-level scores" in said

    classes = sorted({a["label"] for e in database(anet).values() for a in e["annotations"]})
    scores = json.loads((anet.run / SCORE_FILE).read_text())
    assert scores["class"] == classes and set(scores["results"]) == set(database(anet))
    detections = json.loads((anet.run / "student_ema_test.json").read_text())["results"]
    test_videos = {v for v, e in database(anet).items() if e["subset"] == "validation"}
    assert set(detections) == test_videos
    for vid, entries in detections.items():
        top2 = {classes[i] for i in np.argsort(scores["results"][vid])[::-1][:2]}
        assert {e["label"] for e in entries} == top2, vid
        # each class-agnostic segment once per class
        per_class = [sorted(tuple(e["segment"]) for e in entries if e["label"] == c) for c in top2]
        assert per_class[0] == per_class[1] and len(entries) == 2 * len(per_class[0])


def evaluate(run: AnetRun, name: str, *overrides: str) -> dict:
    from fustal.evaluate import run as run_evaluate

    out = f"paths.output_dir={run.tmp / name}"
    cfg = compose_train(run.tmp, *ANET_TINY, out, *overrides, config="evaluate", debug=False)
    return run_evaluate(cfg)


def test_evaluate_fuses_like_the_pipeline(anet: AnetRun, capsys: pytest.CaptureFixture) -> None:
    ckpt = f"ckpt_path={anet.student}"
    cached = evaluate(anet, "eval_cached", ckpt)  # fusion=generator: the cached generator's
    from_file = evaluate(
        anet, "eval_file", ckpt, "fusion=file", f"fusion.score_file={anet.run / SCORE_FILE}"
    )
    for metrics in (cached, from_file):
        for section in ("student", "student_ema"):
            got, want = metrics[section]["test"], anet.metrics[section]["test"]
            assert got == pytest.approx(want, abs=1e-6), section
    # top-1 with the plain product: other detections, fewer of them
    top1 = evaluate(anet, "eval_top1", ckpt, "fusion.topk=1", "fusion.rule=product")
    assert top1["student"]["test"] != cached["student"]["test"]
    one = json.loads((anet.tmp / "eval_top1" / "student_test.json").read_text())["results"]
    two = json.loads((anet.tmp / "eval_cached" / "student_test.json").read_text())["results"]
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

    by_generator = predict(
        *common,
        f"out={tmp_path / 'gen.json'}",
        "fusion.source=generator",
        f"fusion.generator_ckpt={anet.generator}",
    )["results"]
    by_file = predict(
        *common,
        f"out={tmp_path / 'file.json'}",
        "fusion.source=file",
        f"fusion.score_file={anet.run / SCORE_FILE}",
    )["results"]
    for results in (by_generator, by_file):
        assert set(results) == set(videos)
        for vid in videos:
            labels = {e["label"] for e in want[vid]}
            assert {e["label"] for e in results[vid]} == labels, vid
            for label in labels:  # per class, each column sorted: equal up to float rounding
                got, ref = (
                    np.sort([[e["score"], *e["segment"]] for e in dets if e["label"] == label], 0)
                    for dets in (results[vid], want[vid])
                )
                np.testing.assert_allclose(got, ref, atol=1e-4)

    # neither scores nor a generator, a generator checkpoint without its features, a bad file
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({"results": {v: [0.5] * (1 if v == videos[0] else 3) for v in videos}})
    )
    out = tmp_path / "never.json"
    for overrides, needles in (
        ([], ["class-agnostic", "fusion.source=generator", "fusion.source=file"]),
        (["fusion.source=generator"], ["fusion.generator_ckpt"]),
        (["fusion.source=file", f"fusion.score_file={bad}"], [str(bad), videos[0]]),
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
    ):
        with pytest.raises(FustalError, match=needle):
            check_config(compose_train(tmp_path, *overrides))
    check_config(compose_train(tmp_path, "fusion=generator", "student.module.class_agnostic=true"))
