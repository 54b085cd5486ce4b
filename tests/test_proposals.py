"""Proposals from the CAS (METHOD.md section 3) and the research NMS."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.interpolate import interp1d
from scipy.ndimage import gaussian_filter1d

from fustal.errors import FustalError
from fustal.pseudo.nms import nms_research
from fustal.pseudo.proposals import (
    ACTIONNESS_THRESHOLDS,
    CAS_THRESHOLDS,
    cas_to_proposals,
    minmax_normalize,
    predicted_classes,
    threshold_runs,
    upsample_linear,
)
from tests.reference.proposals_loop import cas_to_proposals_loop, group_consecutive, nms_loop

CASES_PER_SEED = 30
SEEDS = range(8)


def sort_rows(p: np.ndarray) -> np.ndarray:
    """Rows sorted by class, start, end, score (order-free comparison)."""
    return p[np.lexsort((p[:, 1], p[:, 3], p[:, 2], p[:, 0]))]


def random_case(rng: np.random.Generator, kind: int) -> tuple:
    """One random video: ``(cas [T, C], actionness [T], video_scores [C], seconds_per_step)``."""
    num_steps, num_classes = int(rng.integers(1, 121)), int(rng.integers(1, 7))
    noise = rng.normal(size=(num_steps, num_classes))
    cas = {
        0: noise,  # noisy, negative values
        1: gaussian_filter1d(noise, 3, axis=0) * 5,  # smooth, negative values
        2: np.maximum(gaussian_filter1d(noise, 2, axis=0) * 5, 0),  # relu'd: zero plateaus
        3: np.round(np.maximum(gaussian_filter1d(noise, 2, axis=0) * 3, 0), 1),  # repeated values
        4: (rng.random((num_steps, num_classes)) < 0.3).astype(float),  # binary steps
        5: np.full((num_steps, num_classes), rng.normal()),  # constant
        6: np.zeros((num_steps, num_classes)),  # all zero
    }[kind]
    actionness = cas.sum(axis=1) if rng.random() < 0.7 else rng.normal(size=num_steps)
    return cas, actionness, rng.random(num_classes), float(rng.uniform(0.1, 2.0))


def random_options(rng: np.random.Generator) -> dict:
    """Non-default keyword arguments (or none), to cover every parameter."""
    if rng.random() < 0.5:
        return {"min_length": int(rng.integers(1, 4))}
    return {
        "class_thresh": float(rng.random()),
        "cas_thresholds": rng.uniform(-0.1, 0.6, int(rng.integers(0, 6))).tolist(),
        "actionness_thresholds": rng.uniform(-0.1, 1.0, int(rng.integers(0, 8))).tolist(),
        "upscale": int(rng.integers(1, 6)),
        "nms_thresh": float(rng.uniform(0.2, 0.9)),
        "oic_lambda": float(rng.choice([0.1, 0.2, 0.25, 0.3, 0.5])),
        "oic_gamma": float(rng.random()),
        "min_length": int(rng.integers(1, 4)),
    }


@pytest.mark.parametrize("seed", SEEDS)
def test_matches_loop_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    total = 0
    for i in range(CASES_PER_SEED):
        cas, act, scores, sps = random_case(rng, i % 7)
        options = random_options(rng)
        fast = cas_to_proposals(cas, act, scores, sps, **options)
        slow = cas_to_proposals_loop(cas, act, scores, sps, **options)
        assert fast.shape == slow.shape, (i, options)
        np.testing.assert_allclose(sort_rows(fast), sort_rows(slow), rtol=0, atol=1e-6)
        assert np.all(np.diff(fast[:, 0]) >= 0)
        total += len(fast)
    assert total > 0


def test_lone_positive_at_index_zero_at_default_settings() -> None:
    rng = np.random.default_rng(0)
    cas = np.zeros((10, 2))
    cas[0, 0] = 1.0
    cas[:, 1] = rng.random(10)
    act, scores = cas.sum(axis=1), np.array([0.5, 0.5])
    fast = cas_to_proposals(cas, act, scores, 0.64)
    np.testing.assert_allclose(
        sort_rows(fast), sort_rows(cas_to_proposals_loop(cas, act, scores, 0.64)), atol=1e-9
    )


def test_hand_built_actionness_proposal() -> None:
    # actionness run [2, 3] (L = 2): left outer region int(2 - 0.5) = 1 -> step 1, right outer
    # region int(3 + 0.5) = 3 -> empty. inner = (1 + 0.8) / 2, outer = 0.4.
    cas = np.array([[0.0], [0.4], [1.0], [0.8], [0.6], [0.0]])
    act = np.array([0.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    out = cas_to_proposals(
        cas, act, np.array([0.5]), 2.0, cas_thresholds=(), actionness_thresholds=(0.5,), upscale=1
    )
    np.testing.assert_allclose(out, [[0.0, 0.9 - 0.4 + 0.2 * 0.5, 4.0, 8.0]], atol=1e-12)


def test_hand_built_cas_proposal_reads_thresholded_outer() -> None:
    # run [1, 4] at threshold 0.2; outer steps 0 and 5 hold 0 and 0.1, and 0.1 < 0.2 reads as 0.
    cas = np.array([[0.0], [0.3], [1.0], [1.0], [0.3], [0.1]])
    out = cas_to_proposals(
        cas,
        cas[:, 0],
        np.array([0.3]),
        1.0,
        cas_thresholds=(0.2,),
        actionness_thresholds=(),
        upscale=1,
    )
    np.testing.assert_allclose(out, [[0.0, 2.6 / 4 - 0.0 + 0.2 * 0.3, 1.0, 5.0]], atol=1e-12)


@pytest.mark.parametrize(
    ("column", "expected_starts"),
    [
        ([1.0, 0.0, 0.0, 0.0], []),  # only positive step is index 0: research drops it
        ([0.0, 0.0, 1.0, 0.0], [2.0]),
        ([1.0, 0.0, 1.0, 0.0], [0.0, 2.0]),  # index 0 with another positive step is kept
    ],
)
def test_lone_step_zero_quirk(column: list[float], expected_starts: list[float]) -> None:
    cas = np.array(column)[:, None]
    options = {"cas_thresholds": (0.5,), "actionness_thresholds": (), "upscale": 1}
    out = cas_to_proposals(cas, cas[:, 0], np.array([1.0]), 1.0, min_length=1, **options)
    ref = cas_to_proposals_loop(cas, cas[:, 0], np.array([1.0]), 1.0, min_length=1, **options)
    assert sorted(out[:, 2].tolist()) == expected_starts
    np.testing.assert_allclose(sort_rows(out), sort_rows(ref))
    assert len(cas_to_proposals(cas, cas[:, 0], np.array([1.0]), 1.0, **options)) == 0


def test_only_predicted_classes_and_argmax_fallback() -> None:
    rng = np.random.default_rng(3)
    cas = np.maximum(gaussian_filter1d(rng.normal(size=(40, 4)), 2, axis=0), 0)
    out = cas_to_proposals(cas, cas.sum(1), np.array([0.1, 0.5, 0.05, 0.3]), 0.64)
    assert set(out[:, 0].tolist()) <= {1.0, 3.0}
    out = cas_to_proposals(cas, cas.sum(1), np.array([0.1, 0.05, 0.15, 0.02]), 0.64)
    assert set(out[:, 0].tolist()) == {2.0}
    np.testing.assert_array_equal(predicted_classes(np.array([0.2, 0.1, 0.3])), [0, 2])
    np.testing.assert_array_equal(predicted_classes(np.array([0.1, 0.15, 0.05])), [1])


def test_torch_input_and_output_layout() -> None:
    rng = np.random.default_rng(4)
    cas = np.maximum(gaussian_filter1d(rng.normal(size=(60, 3)), 2, axis=0), 0).astype(np.float32)
    scores = np.array([0.6, 0.1, 0.3], dtype=np.float32)
    from_np = cas_to_proposals(cas, cas.sum(1), scores, 0.64)
    from_torch = cas_to_proposals(
        torch.from_numpy(cas), torch.from_numpy(cas.sum(1)), torch.from_numpy(scores), 0.64
    )
    np.testing.assert_array_equal(from_np, from_torch)
    assert from_np.dtype == np.float64 and from_np.shape[1] == 4 and len(from_np) > 0
    assert np.all(from_np[:, 3] > from_np[:, 2])
    for c in np.unique(from_np[:, 0]):  # NMS order: descending score inside a class
        assert np.all(np.diff(from_np[from_np[:, 0] == c, 1]) <= 1e-10)


def test_empty_video_gives_no_proposals() -> None:
    out = cas_to_proposals(np.zeros((0, 3)), np.zeros(0), np.array([0.5, 0.2, 0.1]), 0.64)
    assert out.shape == (0, 4)


@pytest.mark.parametrize(
    ("cas", "act", "scores", "sps", "options", "message"),
    [
        (np.zeros(5), np.zeros(5), np.ones(1), 0.64, {}, "cas: expected shape"),
        (np.zeros((5, 2)), np.zeros(4), np.ones(2), 0.64, {}, "actionness: expected shape"),
        (np.zeros((5, 2)), np.zeros(5), np.ones(3), 0.64, {}, "video_scores: expected shape"),
        (np.zeros((5, 0)), np.zeros(5), np.ones(0), 0.64, {}, "cas: no classes"),
        (np.full((5, 1), np.nan), np.zeros(5), np.ones(1), 0.64, {}, "cas: contains NaN"),
        (np.zeros((5, 1)), np.zeros(5), np.ones(1), 0.0, {}, "seconds_per_step"),
        (np.zeros((5, 1)), np.zeros(5), np.ones(1), 0.64, {"upscale": 0}, "upscale"),
        (np.zeros((5, 1)), np.zeros(5), np.ones(1), 0.64, {"cas_thresholds": [[0.1]]}, "cas_thr"),
    ],
)
def test_bad_input_raises(cas, act, scores, sps, options, message) -> None:
    with pytest.raises(FustalError, match=message):
        cas_to_proposals(cas, act, scores, sps, **options)


def test_default_thresholds() -> None:
    assert len(CAS_THRESHOLDS) == 10 and CAS_THRESHOLDS[0] == 0.0
    assert len(ACTIONNESS_THRESHOLDS) == 33 and ACTIONNESS_THRESHOLDS[0] == 0.1
    assert ACTIONNESS_THRESHOLDS[-1] == pytest.approx(0.9)


def test_minmax_normalize() -> None:
    x = np.array([[-1.0, 3.0, -2.0], [0.0, 3.0, -1.0], [2.0, 3.0, -3.0]])
    expected = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    np.testing.assert_array_equal(minmax_normalize(x), expected)
    np.testing.assert_allclose(minmax_normalize(np.array([[1.0], [2.0], [3.0]]))[:, 0], [0, 0.5, 1])


@pytest.mark.parametrize("upscale", [1, 3, 24])
def test_upsample_is_bitwise_interp1d(upscale: int) -> None:
    rng = np.random.default_rng(upscale)
    for num_steps in (2, 3, 17, 100):
        x = rng.random((num_steps, 3))
        grid = np.arange(0, num_steps, 1 / upscale)
        expected = interp1d(np.arange(num_steps), x, axis=0, fill_value="extrapolate")(grid)
        got = upsample_linear(x, upscale)
        assert got.shape == (num_steps * upscale, 3)
        np.testing.assert_array_equal(got, expected)


def test_upsample_single_step_and_extrapolation() -> None:
    np.testing.assert_array_equal(upsample_linear(np.array([[0.7]]), 4), np.full((4, 1), 0.7))
    ramp = upsample_linear(np.array([[0.0], [1.0]]), 4)[:, 0]
    np.testing.assert_allclose(ramp, np.arange(8) / 4)  # past the last sample: 1.25 .. 1.75


def test_threshold_runs_match_masks() -> None:
    rng = np.random.default_rng(7)
    x = np.round(rng.normal(0.3, 0.4, size=(3, 200)), 2)
    thresholds = np.array([0.3, -0.1, 0.0, 0.5, 0.3, 0.71])
    rows, k, first, last = threshold_runs(x, thresholds)
    expected = [
        (r, j, g[0], g[-1])
        for r in range(3)
        for j, th in enumerate(thresholds)
        for g in group_consecutive(np.flatnonzero(np.where(x[r] < th, 0.0, x[r]) > 0))
    ]
    assert list(zip(rows, k, first, last, strict=True)) == expected


def test_nms_research_plus_one_quirk() -> None:
    # plain tIoU of [0, 1] and [0.5, 1.5] is 1/3; with +1 lengths it is 1.5 / 2.5 = 0.6
    segments, scores = np.array([[0.0, 1.0], [0.5, 1.5]]), np.array([0.9, 0.8])
    np.testing.assert_array_equal(nms_research(segments, scores, 0.5), [0])
    np.testing.assert_array_equal(nms_research(segments, scores, 0.61), [0, 1])
    np.testing.assert_array_equal(nms_research(segments * 10, scores, 0.5), [0, 1])


def test_nms_research_ties_and_order() -> None:
    segments = np.array([[0.0, 10.0], [0.5, 10.5], [20.0, 30.0], [40.0, 41.0]])
    scores = np.array([0.5, 0.5 + 1e-13, 0.2, 0.9])
    # 0.5 and 0.5 + 1e-13 tie at 10 decimals: the later one is visited first and kept
    np.testing.assert_array_equal(nms_research(segments, scores), [3, 1, 2])
    np.testing.assert_array_equal(nms_research(segments, scores, tie_decimals=None), [3, 1, 2])
    scores[1] = 0.5
    np.testing.assert_array_equal(nms_research(segments, scores), [3, 1, 2])
    scores[0] = 0.6
    np.testing.assert_array_equal(nms_research(segments, scores), [3, 0, 2])


def test_nms_research_matches_pairwise_loop() -> None:
    rng = np.random.default_rng(11)
    for _ in range(50):
        n = int(rng.integers(0, 60))
        start = rng.uniform(0, 30, n)
        segments = np.stack([start, start + rng.exponential(2.0, n)], axis=1)
        scores = np.round(rng.random(n), 1)  # many exact ties
        thresh = float(rng.uniform(0.1, 0.9))
        rows = [[0, s, a, b] for s, (a, b) in zip(scores, segments, strict=True)]
        expected = [(r[2], r[3]) for r in nms_loop(rows, thresh)]
        kept = nms_research(segments, scores, thresh)
        assert [tuple(segments[i]) for i in kept] == expected


@pytest.mark.parametrize("seed", range(6))
def test_nms_research_groups_match_the_loop_per_group(seed: int) -> None:
    """Many groups in one call (ties, nested and chained segments): each group's kept list is the
    pairwise loop's, groups in ascending order."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 400))
    start = rng.uniform(0, 60, n)
    length = np.where(rng.random(n) < 0.2, rng.uniform(10, 40, n), rng.exponential(1.5, n))
    segments = np.stack([start, start + length], axis=1)
    if seed % 2:  # a chain: each segment overlaps the next by about two thirds
        segments[: n // 2] = np.stack([np.arange(n // 2) * 1.0, np.arange(n // 2) + 3.0], 1)
    scores = np.round(rng.random(n), int(rng.integers(1, 4)))
    groups = rng.integers(0, 5, n)
    thresh = float(rng.uniform(0.2, 0.8))
    kept = nms_research(segments, scores, thresh, groups=groups)
    expected = []
    for g in range(5):
        members = np.flatnonzero(groups == g)
        rows = [[i, scores[i], *segments[i]] for i in members]
        expected += [int(r[0]) for r in nms_loop(rows, thresh)]
    assert kept.tolist() == expected


def test_nms_research_edge_cases() -> None:
    assert nms_research(np.zeros((0, 2)), np.zeros(0)).shape == (0,)
    np.testing.assert_array_equal(nms_research([[0.0, 1.0], [0.0, 1.0]], [0.3, 0.4], 1.5), [1, 0])
    with pytest.raises(FustalError, match="segments"):
        nms_research([[1.0, 0.0]], [0.5])
    with pytest.raises(FustalError, match="scores"):
        nms_research([[0.0, 1.0]], [0.5, 0.4])


def test_proposal_pool_workers_give_the_in_process_results() -> None:
    from fustal.pseudo.parallel import ProposalPool, resolve_workers

    rng = np.random.default_rng(3)
    videos = {}
    for i in range(6):
        cas = np.abs(rng.normal(0, 1, (int(rng.integers(20, 80)), 4))).astype(np.float32)
        scores = np.array([0.5, 0.3, 0.1, 0.1])
        videos[f"v{i}"] = (cas, cas.sum(1), scores, 0.64)
    results = []
    for workers in (0, 2):
        with ProposalPool({"nms_thresh": 0.5}, workers) as pool:
            results.append(pool.map(list(videos.values())))
    for got_serial, got_parallel, args in zip(*results, videos.values(), strict=True):
        np.testing.assert_array_equal(got_serial, got_parallel)
        np.testing.assert_array_equal(got_serial, cas_to_proposals(*args, nms_thresh=0.5))
    assert resolve_workers("auto", 10) == 0 and resolve_workers("auto", 500) >= 1
    assert resolve_workers(3, 1) == 3
    with pytest.raises(FustalError, match="proposal_workers"):
        resolve_workers(-1, 10)
