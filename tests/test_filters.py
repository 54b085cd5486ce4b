"""Prior-based pseudo-label filter (METHOD.md section 4)."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from fustal.errors import FustalError
from fustal.pseudo.filters import (
    filter_rows,
    iou_density_mask,
    overlap_density,
    prior_filter,
)
from fustal.segments import tiou_matrix

# tIoU: (0, 1) = 5 / 15, (0, 3) = 2 / 10 = 0.2 exactly, every other pair 0.
SEGMENTS = np.array([[0.0, 10.0], [5.0, 15.0], [20.0, 30.0], [0.0, 2.0]])
DENSITY = np.array([1 / 3 + 0.2, 1 / 3, 0.0, 0.2])
SCORES = np.array([0.9, 0.4, 0.95, 0.41])  # 0.4 fails "score > 0.4"


def test_pairwise_tiou_and_density_by_hand() -> None:
    tiou = tiou_matrix(SEGMENTS, SEGMENTS)
    assert tiou[0, 1] == pytest.approx(1 / 3) and tiou[0, 3] == pytest.approx(0.2)
    np.testing.assert_allclose(tiou, tiou.T)
    np.testing.assert_allclose(np.diag(tiou), 1.0)
    np.testing.assert_allclose(overlap_density(SEGMENTS), DENSITY)


def test_density_is_class_agnostic_sum_without_diagonal() -> None:
    segments = np.array([[0.0, 4.0], [0.0, 4.0], [0.0, 4.0], [1.0, 3.0]])
    # three identical segments: 1 + 1 from the other two, plus 2 / 4 from the inner one
    np.testing.assert_allclose(overlap_density(segments), [2.5, 2.5, 2.5, 1.5])


@pytest.mark.parametrize(
    ("min_density", "min_score", "expected"),
    [
        (0.2, 0.4, [True, False, False, True]),  # fustal: both; density 0.2 passes (>=)
        (None, 0.4, [True, False, True, True]),  # score only
        (0.2, None, [True, True, False, True]),  # density only
        (None, None, [True, True, True, True]),  # none
        (0.21, 0.4, [True, False, False, False]),
    ],
)
def test_filter_modes(min_density, min_score, expected) -> None:
    mask = iou_density_mask(SEGMENTS, SCORES, min_density, min_score)
    assert mask.dtype == bool
    assert mask.tolist() == expected


def test_defaults_are_fustal_mode() -> None:
    assert iou_density_mask(SEGMENTS, SCORES).tolist() == [True, False, False, True]


def test_a_video_left_without_pseudo_labels_keeps_its_best_ones_with_keep_best() -> None:
    rows = np.column_stack([[0, 1, 0, 2], SCORES, SEGMENTS])
    # density >= 2 keeps none: keep_best=0 leaves the video empty, 2 keeps its two best scores
    assert prior_filter(rows, 2.0, 0.4).shape == (0, 4)
    np.testing.assert_array_equal(prior_filter(rows, 2.0, 0.4, keep_best=2), rows[[0, 2]])
    # a video the thresholds leave with labels keeps exactly those
    np.testing.assert_array_equal(prior_filter(rows, 0.2, 0.4, keep_best=2), rows[[0, 3]])
    assert prior_filter(np.zeros((0, 4)), 2.0, 0.4, keep_best=1).shape == (0, 4)


def test_empty_and_zero_length_segments() -> None:
    assert iou_density_mask(np.zeros((0, 2)), np.zeros(0)).shape == (0,)
    mask = iou_density_mask([[1.0, 1.0], [1.0, 1.0], [0.0, 2.0]], [0.9, 0.9, 0.9])
    assert mask.tolist() == [False, False, False]  # no NaN: empty unions count as 0
    assert iou_density_mask([[0.0, 1.0]], [0.9], min_density=0.0).tolist() == [True]


def test_mask_bad_input() -> None:
    with pytest.raises(FustalError, match="segments"):
        iou_density_mask(np.zeros((3, 3)), np.zeros(3))
    with pytest.raises(FustalError, match="scores"):
        iou_density_mask(SEGMENTS, SCORES[:2])
    with pytest.raises(FustalError, match="ends before it starts"):
        iou_density_mask([[2.0, 1.0]], [0.5])


def _rows() -> dict:
    classes = {"A": 0, "B": 1, "C": 2}
    labels = ["A", "B", "A", "C"]
    v1 = np.column_stack([[classes[lab] for lab in labels], SCORES, SEGMENTS])
    return {
        "v1": v1,
        "v2": np.array([[0, 0.9, 0.0, 1.0]]),  # isolated: dropped
        "v3": np.zeros((0, 4)),
    }


def test_filter_rows_keeps_every_video_and_counts() -> None:
    rows = _rows()
    original = {k: v.copy() for k, v in rows.items()}
    filtered, stats = filter_rows(rows, partial(prior_filter, min_density=0.2, min_score=0.4))
    for vid, video_rows in rows.items():  # input untouched
        np.testing.assert_array_equal(video_rows, original[vid])
    assert list(filtered) == ["v1", "v2", "v3"]
    np.testing.assert_array_equal(filtered["v1"], original["v1"][[0, 3]])
    assert filtered["v2"].shape == (0, 4) and filtered["v3"].shape == (0, 4)
    assert stats == {"videos": 3, "before": 5, "after": 2, "videos_without_labels": 2}


def test_filter_rows_mode_none_keeps_everything() -> None:
    filtered, stats = filter_rows(_rows(), partial(prior_filter, min_density=None, min_score=None))
    for vid, video_rows in _rows().items():
        np.testing.assert_array_equal(filtered[vid], video_rows)
    assert stats == {"videos": 3, "before": 5, "after": 5, "videos_without_labels": 1}


def test_filter_rows_refuses_a_filter_that_returns_no_rows_of_the_video() -> None:
    with pytest.raises(ValueError, match=r"my_filter: video v1: returned an array of shape \(4,\)"):
        filter_rows(_rows(), lambda rows: rows[:, 1], "my_filter")
    with pytest.raises(ValueError, match=r"video v1: .* shape \(8, 4\) for 4 pseudo labels"):
        filter_rows(_rows(), lambda rows: np.vstack([rows, rows]), "my_filter")


@pytest.mark.parametrize(
    ("results", "message"),
    [
        ({"v": {"score": 1}}, "video v: expected a list"),
        ({"v": [{"score": 0.5}]}, "video v: detection without label, segment"),
        ({"v": [{"label": "A", "score": "hi", "segment": [0, 1]}]}, "video v: score is not"),
        ({"v": [{"label": "A", "score": 0.5, "segment": [2, 1]}]}, "ends before it starts"),
        ({"v": [{"label": "Z", "score": 0.5, "segment": [0, 1]}]}, "unknown class 'Z'"),
    ],
)
def test_pseudo_label_results_are_checked_when_read(results, message) -> None:
    from fustal.metrics.results import results_to_rows

    with pytest.raises(FustalError, match=message):
        results_to_rows(results, ["A", "B", "C"], "pseudo.json")
