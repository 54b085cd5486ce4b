"""Detection mAP, results files, pseudo-label quality and the torchmetrics wrapper."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fustal.data.annotations import Video, load_annotations
from fustal.errors import FustalError
from fustal.metrics.detection import (
    Detections,
    _match_ranked,
    average_precision,
    detection_map,
    match_predictions,
    tiou_key,
)
from fustal.metrics.quality import pseudo_label_quality
from fustal.metrics.results import (
    gt_to_detections,
    read_results,
    results_to_detections,
    rows_to_results,
)
from fustal.metrics.shape import flatten, nest, numbers, sections
from fustal.metrics.torchmetric import DetectionMAP
from fustal.segments import tiou_matrix
from tests.reference.map_loop import average_precision_loop, detection_map_loop

ROOT = Path(__file__).resolve().parents[1]
THUMOS_GT = ROOT / "data/annotations/thumos14/gt.json"


def dets(rows: list[tuple], with_score: bool = True) -> Detections:
    """Rows ``(video, label, start, end[, score])`` -> Detections."""
    arr = np.asarray(rows, dtype=np.float64).reshape(-1, 5 if with_score else 4)
    return Detections(
        video=arr[:, 0].astype(np.int64),
        label=arr[:, 1].astype(np.int64),
        segment=arr[:, 2:4],
        score=arr[:, 4] if with_score else None,
    )


def ap_at(gt_rows, pred_rows, thresholds, num_classes=1) -> np.ndarray:
    return average_precision(
        dets(gt_rows, with_score=False), dets(pred_rows), thresholds, num_classes
    )


# --- tIoU and keys ---------------------------------------------------------------------------


def test_tiou_matrix_hand_values():
    a = np.array([[0.0, 10.0], [5.0, 5.0]])
    b = np.array([[5.0, 15.0], [20.0, 30.0], [0.0, 10.0], [5.0, 5.0]])
    expected = np.array([[5 / 15, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(tiou_matrix(a, b), expected)
    assert tiou_matrix(a, np.zeros((0, 2))).shape == (2, 0)


@pytest.mark.parametrize(
    ("t", "key"),
    [(0.1, "mAP@0.1"), (0.55, "mAP@0.55"), (0.1 * 3, "mAP@0.3"), (0.5, "mAP@0.5"), (1, "mAP@1")],
)
def test_tiou_key(t, key):
    assert tiou_key(t) == key


# --- hand-computed AP ------------------------------------------------------------------------


def test_duplicate_prediction_is_false_positive():
    gt = [(0, 0, 0, 10), (0, 0, 20, 30)]
    pred = [(0, 0, 0, 10, 0.9), (0, 0, 0, 10, 0.8), (0, 0, 20, 30, 0.7)]
    # tp = [1, 0, 1]: precision [1, 1/2, 2/3], recall [1/2, 1/2, 1] -> 0.5 * 1 + 0.5 * 2/3
    assert ap_at(gt, pred, [0.5])[0, 0] == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_overlapping_gt_of_one_class_greedy_best_unmatched():
    gt = [(0, 0, 0, 10), (0, 0, 5, 15)]
    # p1 overlaps A (2/3) more than B (7/13) and takes A; p2 then only has B at 4/15.
    pred = [(0, 0, 2, 12, 0.9), (0, 0, 0, 9, 0.8)]
    ap = ap_at(gt, pred, [0.25, 0.5])
    assert ap[0, 0] == pytest.approx(1.0)
    assert ap[1, 0] == pytest.approx(0.5)


def test_class_without_predictions_has_ap_zero_and_enters_mean():
    gt = dets([(0, 0, 0, 10), (0, 1, 20, 30)], with_score=False)
    pred = dets([(0, 0, 0, 10, 0.9)])
    ap = average_precision(gt, pred, [0.5], 3)
    assert ap[0, 0] == 1.0 and ap[0, 1] == 0.0 and np.isnan(ap[0, 2])
    assert detection_map(gt, pred, [0.5], 3) == {"mAP@0.5": 0.5, "avg": 0.5}


def test_video_without_predictions_lowers_recall():
    gt = [(0, 0, 0, 10), (1, 0, 0, 10)]
    assert ap_at(gt, [(0, 0, 0, 10, 0.9)], [0.5])[0, 0] == pytest.approx(0.5)


def test_equal_scores_later_prediction_ranks_first():
    gt = [(0, 0, 0, 10)]
    # Same score: the later (weak) prediction is ranked first -> tp = [0, 1] -> AP 0.5.
    assert ap_at(gt, [(0, 0, 0, 10, 0.5), (0, 0, 0, 4, 0.5)], [0.5])[0, 0] == pytest.approx(0.5)
    assert ap_at(gt, [(0, 0, 0, 4, 0.5), (0, 0, 0, 10, 0.5)], [0.5])[0, 0] == pytest.approx(1.0)


def test_equal_tiou_later_gt_is_taken():
    gt = [(0, 0, 0, 10), (0, 0, 10, 20)]
    # p1 has tIoU 1/3 with both and takes the later GT; p2 then has nothing left.
    pred = [(0, 0, 5, 15, 0.9), (0, 0, 10, 20, 0.8)]
    assert ap_at(gt, pred, [0.3])[0, 0] == pytest.approx(0.5)


def test_prediction_on_unknown_video_is_false_positive():
    gt = [(0, 0, 0, 10)]
    pred = [(-1, 0, 0, 10, 0.9), (5, 0, 0, 10, 0.8), (0, 0, 0, 10, 0.5)]
    assert ap_at(gt, pred, [0.5])[0, 0] == pytest.approx(1 / 3)


def test_predictions_of_classes_without_gt_are_ignored():
    gt = dets([(0, 0, 0, 10)], with_score=False)
    base = dets([(0, 0, 0, 10, 0.5)])
    noisy = dets([(0, 1, 0, 10, 0.9), (0, 7, 0, 10, 0.9), (0, -3, 1, 2, 0.9), (0, 0, 0, 10, 0.5)])
    assert detection_map(gt, noisy, [0.5], 2) == detection_map(gt, base, [0.5], 2)
    assert detection_map(gt, noisy, [0.5], 2)["avg"] == 1.0


def test_no_predictions_at_all():
    gt = dets([(0, 0, 0, 10), (0, 1, 0, 10)], with_score=False)
    empty = dets([])
    assert detection_map(gt, empty, [0.3, 0.7], 2) == {"mAP@0.3": 0.0, "mAP@0.7": 0.0, "avg": 0.0}


def test_map_keys_and_average():
    gt = [(0, 0, 0, 10)]
    pred = [(0, 0, 0, 6, 0.9)]  # tIoU 0.6
    result = detection_map(dets(gt, False), dets(pred), np.linspace(0.5, 0.7, 3), 1)
    assert result == {"mAP@0.5": 1.0, "mAP@0.6": 1.0, "mAP@0.7": 0.0, "avg": pytest.approx(2 / 3)}
    assert all(isinstance(v, float) for v in result.values())


@pytest.mark.parametrize(
    ("gt", "pred", "thresholds", "num_classes"),
    [
        ([], [(0, 0, 0, 1, 0.5)], [0.5], 1),
        ([(0, 2, 0, 1)], [], [0.5], 2),
        ([(-1, 0, 0, 1)], [], [0.5], 1),
        ([(0, 0, 0, 1)], [], [1.5], 1),
        ([(0, 0, 0, 1)], [], [], 1),
        ([(0, 0, 0, 1)], [(0, 0, 0, 1, float("nan"))], [0.5], 1),
    ],
)
def test_bad_input_raises(gt, pred, thresholds, num_classes):
    with pytest.raises(FustalError):
        detection_map(dets(gt, False), dets(pred), thresholds, num_classes)


def test_match_predictions_input_order_flags():
    gt = dets([(0, 0, 0, 10), (0, 1, 0, 10)], with_score=False)
    pred = dets([(0, 0, 0, 10, 0.1), (0, 0, 0, 10, 0.9), (0, 1, 0, 7, 0.5), (1, 0, 0, 10, 0.9)])
    tp = match_predictions(gt, pred, [0.5, 0.8], 2)
    np.testing.assert_array_equal(tp, [[0, 1, 1, 0], [0, 1, 0, 0]])


# --- vectorized == loop reference -----------------------------------------------------------


def random_case(seed: int) -> tuple[Detections, Detections, list[float], int]:
    """Small random GT/predictions on a half-second grid.

    Includes ties in scores and tIoU, exact duplicates of GT, zero-length and reversed predicted
    segments, unknown videos (-1 and out of range) and labels outside ``[0, C)``.
    """
    rng = np.random.default_rng(seed)
    num_videos, num_classes = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    n_gt, n_pred = int(rng.integers(1, 15)), int(rng.integers(0, 60))
    gs = rng.integers(0, 20, n_gt) / 2.0
    gt = Detections(
        rng.integers(0, num_videos, n_gt),
        rng.integers(0, num_classes, n_gt),
        np.c_[gs, gs + rng.integers(0, 8, n_gt) / 2.0],
    )
    ps = rng.integers(0, 20, n_pred) / 2.0
    segment = np.c_[ps, ps + rng.integers(-2, 8, n_pred) / 2.0]  # some reversed (end < start)
    video = rng.integers(-1, num_videos + 1, n_pred)
    label = rng.integers(-1, num_classes + 1, n_pred)
    copy = rng.random(n_pred) < 0.3  # exact copies of GT segments (duplicates)
    src = rng.integers(0, n_gt, int(copy.sum()))
    segment[copy], video[copy], label[copy] = gt.segment[src], gt.video[src], gt.label[src]
    pred = Detections(video, label, segment, rng.integers(0, 5, n_pred) / 4.0)
    thresholds = [[0.1, 0.3, 0.5, 0.7], [0.0, 0.25, 1.0], [1 / 3, 0.5, 2 / 3]][seed % 3]
    return gt, pred, thresholds, num_classes


def test_vectorized_equals_loop_reference_on_random_inputs():
    for seed in range(150):
        gt, pred, thresholds, num_classes = random_case(seed)
        ours = average_precision(gt, pred, thresholds, num_classes)
        ref = average_precision_loop(gt, pred, thresholds, num_classes)
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12, err_msg=f"seed {seed}")
        assert detection_map(gt, pred, thresholds, num_classes) == pytest.approx(
            detection_map_loop(gt, pred, thresholds, num_classes), abs=1e-12
        )


def test_vectorized_equals_loop_on_continuous_segments():
    rng = np.random.default_rng(7)
    gs = rng.uniform(0, 100, 60)
    gt = Detections(
        rng.integers(0, 3, 60), rng.integers(0, 4, 60), np.c_[gs, gs + rng.uniform(1, 9, 60)]
    )
    ps = rng.uniform(0, 100, 2000)
    pred = Detections(
        rng.integers(0, 3, 2000),
        rng.integers(0, 4, 2000),
        np.c_[ps, ps + rng.uniform(0.1, 12, 2000)],
        rng.random(2000),
    )
    thresholds = np.linspace(0.1, 0.9, 9)
    np.testing.assert_allclose(
        average_precision(gt, pred, thresholds, 4),
        average_precision_loop(gt, pred, thresholds, 4),
        rtol=0,
        atol=1e-12,
    )


def test_pair_chunking_does_not_change_matching():
    for seed in range(20):
        gt, pred, thresholds, num_classes = random_case(seed)
        thr = np.asarray(thresholds)
        order, tp = _match_ranked(gt, pred, thr, num_classes)
        order_small, tp_small = _match_ranked(gt, pred, thr, num_classes, max_pairs=2)
        np.testing.assert_array_equal(order, order_small)
        np.testing.assert_array_equal(tp, tp_small)


# --- results files ---------------------------------------------------------------------------


RESULTS = {
    "vid_a": [
        {"label": "Jump", "score": "0.9", "segment": ["1.0", "2.5"]},
        {"label": "Nope", "score": 0.8, "segment": [0, 1]},
        {"label": "Run", "score": 0.7, "segment": [3, 4]},
    ],
    "vid_x": [{"label": "Run", "score": 0.5, "segment": [0.0, 1.0]}],
}


def test_read_results_wrapped_and_bare(tmp_path):
    wrapped, bare = tmp_path / "wrapped.json", tmp_path / "bare.json"
    wrapped.write_text(json.dumps({"version": "x", "results": RESULTS}))
    bare.write_text(json.dumps(RESULTS))
    assert read_results(wrapped) == RESULTS
    assert read_results(bare) == RESULTS


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not found"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"results": {"v1": {"label": "a"}}}), "v1"),
        (json.dumps({"results": {"v2": [{"label": "a", "segment": [0, 1]}]}}), "v2"),
        (json.dumps({"results": {"v3": [{"label": "a", "score": 1, "segment": [0]}]}}), "v3"),
    ],
)
def test_read_results_errors(tmp_path, content, message):
    path = tmp_path / "r.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(FustalError, match=message):
        read_results(path)


def test_results_to_detections_conversion():
    det = results_to_detections({"results": RESULTS}, ["Jump", "Run"], ["vid_a", "vid_b"])
    np.testing.assert_array_equal(det.video, [0, 0, -1])
    np.testing.assert_array_equal(det.label, [0, 1, 1])
    np.testing.assert_array_equal(det.segment, [[1.0, 2.5], [3, 4], [0, 1]])
    np.testing.assert_array_equal(det.score, [0.9, 0.7, 0.5])
    assert det.segment.dtype == np.float64 and det.video.dtype == np.int64


def test_results_to_detections_bad_number_names_video():
    bad = {"v9": [{"label": "Run", "score": "high", "segment": [0, 1]}]}
    with pytest.raises(FustalError, match="v9.*score"):
        results_to_detections(bad, ["Run"], ["v9"])


def test_gt_to_detections_and_proposals_round_trip():
    videos = [
        Video("a", "test", 10.0, 30.0, np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([1, 0])),
        Video("b", "test", 10.0, 30.0, np.zeros((0, 2)), np.zeros(0, dtype=np.int64)),
        Video("c", "test", 10.0, 30.0, np.array([[5.0, 6.0]]), np.array([1])),
    ]
    gt, ids = gt_to_detections(videos)
    assert ids == ["a", "b", "c"]
    np.testing.assert_array_equal(gt.video, [0, 0, 2])
    np.testing.assert_array_equal(gt.label, [1, 0, 1])
    assert gt.score is None

    classes = ["X", "Y"]
    per_video = {
        "a": np.array([[1, 0.9, 1.0, 2.0], [0, 0.8, 3.0, 4.0]]),
        "b": np.zeros((0, 4)),
        "c": np.array([[1, 0.7, 5.0, 6.0]]),
    }
    results = rows_to_results(per_video, classes)
    assert results["results"]["a"][0] == {"label": "Y", "score": 0.9, "segment": [1.0, 2.0]}
    assert results["results"]["b"] == []
    pred = results_to_detections(results, classes, ids)
    assert detection_map(gt, pred, [0.5], 2)["avg"] == 1.0
    with pytest.raises(FustalError, match="a"):
        rows_to_results({"a": np.array([[2, 0.9, 1.0, 2.0]])}, classes)


def test_real_thumos_gt_to_detections():
    annotations = load_annotations(THUMOS_GT)
    gt, ids = gt_to_detections(annotations.subset("test"))
    assert len(ids) == 210
    assert len(gt) == sum(v.num_segments for v in annotations.subset("test"))
    assert gt.label.max() < annotations.num_classes


# --- pseudo-label quality --------------------------------------------------------------------


def test_pseudo_label_quality_hand_case():
    gt = dets([(0, 0, 0, 10), (0, 0, 20, 30)], with_score=False)
    # one hit, one duplicate of it, one wrong class on the second GT.
    pred = dets([(0, 0, 0, 10, 0.9), (0, 0, 1, 10, 0.8), (0, 1, 20, 30, 0.7)])
    q = pseudo_label_quality(gt, pred, num_classes=2, tiou_thresholds=[0.5, 0.95])
    assert q == {
        "count": 3,
        "precision@0.5": pytest.approx(1 / 3),
        "recall@0.5": pytest.approx(0.5),
        "avg": pytest.approx(0.5),
        "mAP@0.5": pytest.approx(0.5),
        "mAP@0.95": pytest.approx(0.5),
    }
    q7 = pseudo_label_quality(gt, pred, num_classes=2, tiou_thresholds=[0.5], match_tiou=0.75)
    assert q7["precision@0.75"] == pytest.approx(1 / 3) and q7["recall@0.75"] == 0.5


# --- torchmetrics wrapper --------------------------------------------------------------------


def as_tensors(det: Detections) -> tuple[torch.Tensor, ...]:
    return (
        torch.from_numpy(det.video),
        torch.from_numpy(det.label),
        torch.from_numpy(det.score).float(),
        torch.from_numpy(det.segment).float(),
    )


def per_video(det: Detections, videos: np.ndarray) -> list[np.ndarray]:
    """Rows ``[K, 4]`` (class, score, start, end) of each video of ``videos``."""
    score = det.score if det.score is not None else np.ones(len(det))
    rows = np.column_stack([det.label, score, det.segment])
    return [rows[det.video == v] for v in videos]


def by_video(det: Detections) -> Detections:
    """``det`` in the order per-video updates feed it: by video index, stable (the order that
    breaks score ties)."""
    order = np.argsort(det.video, kind="stable")
    score = None if det.score is None else det.score[order]
    return Detections(det.video[order], det.label[order], det.segment[order], score)


def metric_update(metric: DetectionMAP, gt: Detections, pred: Detections, videos) -> None:
    """Feed ``videos`` (their detections and ground truth) to ``metric``, as a batch would."""
    videos = np.asarray(videos)
    truth = per_video(gt, videos)
    metric.update(
        videos.tolist(),
        per_video(pred, videos),
        [t[:, 2:4] for t in truth],
        [t[:, 0] for t in truth],
    )


def test_detection_map_metric_equals_function_and_split_updates():
    gt, pred, thresholds, num_classes = random_case(4)
    # float32 inputs, as a model would give them; the metric keeps what it is given.
    pred32 = Detections(
        pred.video,
        pred.label,
        pred.segment.astype(np.float32),
        pred.score.astype(np.float32),
    )
    expected = detection_map(gt, by_video(pred32), thresholds, num_classes)
    videos = np.unique(np.concatenate([gt.video, pred32.video]))  # -1: unknown videos

    whole = DetectionMAP(num_classes, thresholds)
    metric_update(whole, gt, pred32, videos)
    split = DetectionMAP(num_classes, thresholds)
    for part in np.array_split(videos, 3):
        metric_update(split, gt, pred32, part)
    for metric in (whole, split):
        out = metric.compute()
        assert set(out) == set(expected)
        for key, value in expected.items():
            assert out[key].item() == pytest.approx(value, abs=1e-12)


def _ddp_worker(rank: int, world: int, port: int, payload: dict, out_dir: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        metric = DetectionMAP(payload["num_classes"], payload["thresholds"])
        gt, pred = payload["gt"], payload["pred"]
        if rank == 0:  # every detection, no ground truth
            videos = np.unique(pred.video)
            metric.update(
                videos.tolist(), per_video(pred, videos), [[]] * len(videos), [[]] * len(videos)
            )
        else:  # the ground truth, no detection at all
            videos = np.unique(gt.video)
            truth = per_video(gt, videos)
            empty = [np.zeros((0, 4))] * len(videos)
            metric.update(
                videos.tolist(), empty, [t[:, 2:4] for t in truth], [t[:, 0] for t in truth]
            )
        result = {k: v.item() for k, v in metric.compute().items()}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def test_detection_map_metric_syncs_when_a_rank_has_no_detections(tmp_path):
    gt, pred, thresholds, num_classes = random_case(5)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    payload = {"gt": gt, "pred": pred, "thresholds": thresholds, "num_classes": num_classes}
    # forked ranks: a spawned one would spend seconds importing torch again
    mp.start_processes(
        _ddp_worker, args=(2, port, payload, str(tmp_path)), nprocs=2, start_method="fork"
    )
    expected = detection_map(gt, by_video(pred), thresholds, num_classes)
    for rank in range(2):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got == pytest.approx(expected, abs=1e-6)


def test_the_metrics_shapes_round_trip():
    """Flat keys keep the dots of a metric's name; nesting keeps the first key's order."""
    flat = {"generator.test.mAP@0.5": 0.4, "pseudo_labels.raw.count": 3, "generator.val.avg": 0.2}
    assert nest(flat) == {
        "generator": {"test": {"mAP@0.5": 0.4}, "val": {"avg": 0.2}},
        "pseudo_labels": {"raw": {"count": 3}},
    }
    assert list(nest(flat)["generator"]) == ["test", "val"]
    assert list(sections(flat)) == ["generator.test", "pseudo_labels.raw", "generator.val"]
    assert flatten(nest(flat)) == flatten(sections(flat)) == flat
    assert numbers({**flat, "generator.selected.metric": "avg", "x.y.ok": True}) == flat
