"""Generator numerics: morphology, median, mining, contrastive and action losses, network."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from fustal.errors import FustalError
from fustal.generator.losses import (
    action_loss,
    contrast_matrix,
    cross_video_contrast,
    same_label_mask,
)
from fustal.generator.mining import (
    Snippets,
    binary_dilation_1d,
    binary_erosion_1d,
    hard_regions,
    median_binarize,
    mine_snippets,
)
from fustal.generator.network import GeneratorNet


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5, 6, 7])
@pytest.mark.parametrize("num_steps", [1, 4, 9, 40])
def test_morphology_matches_scipy(width: int, num_steps: int) -> None:
    rng = np.random.default_rng(width * 100 + num_steps)
    mask = rng.random((6, num_steps)) > rng.uniform(0.2, 0.8, size=(6, 1))
    mask[0] = True
    mask[1] = False
    structure = np.ones((1, width))
    eroded = binary_erosion_1d(torch.from_numpy(mask), width)
    dilated = binary_dilation_1d(torch.from_numpy(mask), width)
    assert eroded.dtype == torch.bool and dilated.dtype == torch.bool
    np.testing.assert_array_equal(eroded.numpy(), ndimage.binary_erosion(mask, structure=structure))
    np.testing.assert_array_equal(
        dilated.numpy(), ndimage.binary_dilation(mask, structure=structure)
    )


def test_morphology_rejects_bad_width() -> None:
    with pytest.raises(FustalError):
        binary_erosion_1d(torch.ones(1, 5, dtype=torch.bool), 0)
    with pytest.raises(FustalError):
        binary_dilation_1d(torch.ones(5, dtype=torch.bool), 3)


@pytest.mark.parametrize("num_steps", [1, 2, 7, 10, 31, 32])
def test_median_binarize_matches_numpy(num_steps: int) -> None:
    rng = np.random.default_rng(num_steps)
    a = rng.random((5, num_steps)).astype(np.float32)
    a[0] = np.round(a[0] * 3)  # many ties
    expected = a > np.median(a, axis=1, keepdims=True)
    np.testing.assert_array_equal(median_binarize(torch.from_numpy(a)).numpy(), expected)


def test_median_binarize_uses_numpy_midpoint_rounding() -> None:
    lo = np.float32(1) + np.float32(2**-23)
    hi = np.float32(1) + np.float32(2**-22)
    a = np.array([[hi, lo, lo, hi]], dtype=np.float32)
    # float32 (lo + hi) / 2 rounds up to hi, so nothing is above the median.
    expected = a > np.median(a, axis=1, keepdims=True)
    assert not expected.any()
    np.testing.assert_array_equal(median_binarize(torch.from_numpy(a)).numpy(), expected)


def test_hard_regions_match_research_formula() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((4, 50)).astype(np.float32)
    binary = (a > np.median(a, 1, keepdims=True)).astype(np.float32)
    ones = {w: np.ones((1, w)) for w in (3, 6)}
    inner_ref = ndimage.binary_erosion(binary, structure=ones[3]).astype(np.float32)
    inner_ref -= ndimage.binary_erosion(binary, structure=ones[6]).astype(np.float32)
    outer_ref = ndimage.binary_dilation(binary, structure=ones[6]).astype(np.float32)
    outer_ref -= ndimage.binary_dilation(binary, structure=ones[3]).astype(np.float32)
    inner, outer = hard_regions(torch.from_numpy(a), m=3, M=6)
    np.testing.assert_array_equal(inner.numpy(), inner_ref)
    np.testing.assert_array_equal(outer.numpy(), outer_ref)


def _indices(selected: torch.Tensor) -> list[list[int]]:
    """Embedding rows are their own step index (H = 1), so gathered values are indices."""
    return selected[..., 0].long().tolist()


def test_mine_snippets_hand_built() -> None:
    # Action block at steps 5..14 (above the median); background at the other 10 steps.
    a = torch.tensor(
        [
            [0.3, 0.2, 0.5, 0.4, 0.1, 5.0, 6.0, 7.0, 8.0, 9.0]
            + [10.0, 9.5, 8.5, 7.5, 6.5, 0.05, 0.6, 0.7, 0.15, 0.25]
        ]
    )
    emb = torch.arange(20.0).view(1, 20, 1)
    s = mine_snippets(emb, a, r_easy=5, r_hard=10, m=3, M=6, drop_p=0.0)
    assert s.easy_act.shape == (1, 4, 1) and s.hard_act.shape == (1, 2, 1)
    # Easy action: 4 largest a; easy background: 4 smallest a.
    assert _indices(s.easy_act) == [[10, 11, 9, 12]]
    assert _indices(s.easy_bkg) == [[15, 4, 18, 1]]
    # erode_3 = 6..13, erode_6 (window i-3..i+2) = 8..12 -> inner = {6, 7, 13}.
    assert _indices(s.hard_act) == [[13, 7]]
    # dilate_3 = 4..15, dilate_6 (window i-2..i+3) = 2..16 -> outer = {2, 3, 16}.
    assert _indices(s.hard_bkg) == [[16, 2]]


def test_mine_snippets_border_and_batch() -> None:
    # Video 0: action block at 0..9 touches the left border (scipy border value 0).
    a0 = [4.0, 5.0, 6.0, 3.0, 3.5, 3.2, 3.1, 3.3, 3.4, 7.0] + [0.1 * i for i in range(1, 11)]
    # Video 1: action block at 10..19 touches the right border.
    a1 = a0[10:] + a0[:10]
    a = torch.tensor([a0, a1])
    emb = torch.arange(20.0).view(1, 20, 1).expand(2, 20, 1)
    s = mine_snippets(emb, a, r_easy=5, r_hard=20, m=3, M=6, drop_p=0.0)
    # Video 0: inner = {1, 2, 8} (a = 5, 6, 3.4), outer = {11} only.
    # Video 1: binary 10..19; erode_3 = 11..18, erode_6 = 13..17 -> inner = {11, 12, 18};
    # dilate_3 = 9..19, dilate_6 = 7..19 -> outer = {7, 8}.
    assert _indices(s.hard_act) == [[2], [12]]
    assert _indices(s.hard_bkg) == [[11], [8]]
    assert _indices(s.easy_act) == [[9, 2, 1, 0], [19, 12, 11, 10]]


def test_mine_snippets_counts_at_least_one_and_shape_checks() -> None:
    s = mine_snippets(torch.randn(2, 3, 4), torch.rand(2, 3), r_easy=5, r_hard=20)
    assert s.easy_act.shape == (2, 1, 4) and s.hard_bkg.shape == (2, 1, 4)
    with pytest.raises(FustalError):
        mine_snippets(torch.randn(2, 3, 4), torch.rand(2, 4))


def test_mine_snippets_dropout_changes_easy_choice() -> None:
    torch.manual_seed(0)
    a = torch.linspace(0, 1, 50).expand(8, 50).contiguous()
    emb = torch.arange(50.0).view(1, 50, 1).expand(8, 50, 1)
    plain = mine_snippets(emb, a, drop_p=0.0)
    dropped = mine_snippets(emb, a, drop_p=0.6)
    assert _indices(plain.easy_act) == [list(range(49, 39, -1))] * 8
    assert _indices(dropped.easy_act) != _indices(plain.easy_act)
    # Hard snippets do not depend on the dropout mask.
    assert torch.equal(plain.hard_act, dropped.hard_act)


def info_nce(
    q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor, temperature: float
) -> torch.Tensor:
    """The reference InfoNCE: cross-entropy (target 0) of ``[q.k, q.n_1, ..., q.n_K] / T`` per
    row of L2-normalized ``q, k [B, H]`` and ``negatives [B, K, H]``, averaged over the batch."""
    q, k, negatives = (F.normalize(x, dim=-1) for x in (q, k, negatives))
    logits = torch.cat([(q * k).sum(-1, keepdim=True), torch.einsum("bh,bkh->bk", q, negatives)], 1)
    target = torch.zeros(logits.shape[0], dtype=torch.long)
    return F.cross_entropy(logits / temperature, target)


def test_info_nce_hand_computed() -> None:
    temperature = 0.5
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    k = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    negatives = torch.tensor([[[0.0, 3.0], [1.0, 1.0]], [[0.0, -1.0], [4.0, 0.0]]])
    r = 1 / math.sqrt(2)
    # Row 0: cosines pos 1, negs 0 and r. Row 1: pos r, negs -1 and 0.
    row0 = -math.log(math.exp(1 / temperature) / sum(math.exp(c / temperature) for c in (1, 0, r)))
    row1 = -math.log(math.exp(r / temperature) / sum(math.exp(c / temperature) for c in (r, -1, 0)))
    value = info_nce(q, k, negatives, temperature=temperature)
    assert value.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    assert info_nce(q[:1], k[:1], negatives[:1], temperature).item() == pytest.approx(row0)


def _random_snippets(batch: int, seed: int = 0) -> Snippets:
    g = torch.Generator().manual_seed(seed)
    return Snippets(*(torch.randn(batch, n, 6, generator=g) for n in (4, 4, 2, 2)))


def test_snippet_contrast_is_sum_of_two_nce() -> None:
    s = _random_snippets(3)
    expected = info_nce(s.hard_act.mean(1), s.easy_act.mean(1), s.easy_bkg, 0.1) + info_nce(
        s.hard_bkg.mean(1), s.easy_bkg.mean(1), s.easy_act, 0.1
    )
    assert torch.diagonal(contrast_matrix(s, 0.1)).mean().item() == pytest.approx(expected.item())


def same_label_pairs(labels: torch.Tensor) -> list[list[int]]:
    """Reference: unordered pairs ``i < j`` of videos with identical label vectors."""
    rows = labels.tolist()
    return [[i, j] for i in range(len(rows)) for j in range(i + 1, len(rows)) if rows[i] == rows[j]]


def test_same_label_mask() -> None:
    labels = torch.tensor([[1, 0], [0, 1], [1, 0], [1, 0], [1, 1], [0, 1]]).float()
    mask = same_label_mask(labels)
    assert torch.triu(mask, 1).nonzero().tolist() == [[0, 2], [0, 3], [1, 5], [2, 3]]
    assert torch.equal(mask, mask.T) and not mask.diagonal().any()
    assert not same_label_mask(torch.eye(3)).any()


def test_contrast_matrix_entries_are_the_two_nce_terms() -> None:
    s = _random_snippets(3, seed=2)
    terms = contrast_matrix(s, 0.1)
    for q in range(3):
        for k in range(3):
            expected = info_nce(
                s.hard_act[q : q + 1].mean(1),
                s.easy_act[k : k + 1].mean(1),
                s.easy_bkg[k : k + 1],
                0.1,
            ) + info_nce(
                s.hard_bkg[q : q + 1].mean(1),
                s.easy_bkg[k : k + 1].mean(1),
                s.easy_act[k : k + 1],
                0.1,
            )
            assert terms[q, k].item() == pytest.approx(expected.item(), rel=1e-5)


def _pair_term(s: Snippets, i: int, j: int, temperature: float) -> torch.Tensor:
    """One pair's term written out: a batch of two (j against i, i against j)."""
    q_rows, kv_rows = [j, i], [i, j]
    ha = info_nce(
        s.hard_act[q_rows].mean(1), s.easy_act[kv_rows].mean(1), s.easy_bkg[kv_rows], temperature
    )
    hb = info_nce(
        s.hard_bkg[q_rows].mean(1), s.easy_bkg[kv_rows].mean(1), s.easy_act[kv_rows], temperature
    )
    return ha + hb


def test_cross_video_weighting() -> None:
    s = _random_snippets(4, seed=1)
    terms = contrast_matrix(s, 0.07)
    labels = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    one, pairs = cross_video_contrast(terms, labels, weight=0.2)
    assert pairs.item() == 1
    assert one.item() == pytest.approx(0.2 * _pair_term(s, 0, 1, 0.07).item(), rel=1e-5)
    labels = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    two, pairs = cross_video_contrast(terms, labels, weight=0.5)
    expected = sum(_pair_term(s, i, j, 0.07).item() for i, j in same_label_pairs(labels)) * 0.5 / 2
    assert pairs.item() == 2 and two.item() == pytest.approx(expected, rel=1e-5)
    none, pairs = cross_video_contrast(terms, torch.eye(4))
    assert none.item() == 0.0 and pairs.item() == 0


def test_action_loss_hand_computed() -> None:
    scores = torch.tensor([[0.5, 0.5], [0.9, 0.1]])
    labels = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    expected = (math.log(2) * 2 - math.log(0.9) - math.log(0.9)) / 4
    assert action_loss(scores, labels).item() == pytest.approx(expected, rel=1e-6)


def test_generator_net_outputs() -> None:
    torch.manual_seed(0)
    net = GeneratorNet(feature_dim=5, num_classes=3, hidden_dim=7, r_easy=4).eval()
    x = torch.randn(2, 9, 5)
    out = net(x)
    assert out.emb.shape == (2, 9, 7) and out.cas.shape == (2, 9, 3)
    assert out.actionness.shape == (2, 9) and out.video_scores.shape == (2, 3)
    assert (out.cas >= 0).all() and (out.emb >= 0).all()
    torch.testing.assert_close(out.actionness, out.cas.sum(-1))
    top = out.cas.sort(dim=1, descending=True).values[:, :2].mean(1)  # k = 9 // 4 = 2
    torch.testing.assert_close(out.video_scores, torch.softmax(top, dim=-1))
    short = net(torch.randn(1, 3, 5))  # 3 // 4 = 0 -> k = 1
    torch.testing.assert_close(short.video_scores, torch.softmax(short.cas.max(1).values, -1))
    with pytest.raises(FustalError, match="features"):
        net(torch.randn(2, 9, 4))


def test_generator_net_padded_batch_matches_single_videos() -> None:
    torch.manual_seed(1)
    net = GeneratorNet(feature_dim=4, num_classes=3, hidden_dim=6, r_easy=5).eval()
    videos = [torch.randn(1, n, 4) for n in (12, 7, 3)]
    padded = torch.zeros(3, 12, 4)
    for i, video in enumerate(videos):
        padded[i, : video.shape[1]] = video[0]
    valid = torch.tensor([12, 7, 3])
    batch = net(padded, valid)
    unmasked = net(padded)
    for i, video in enumerate(videos):
        single = net(video)
        n = video.shape[1]
        torch.testing.assert_close(batch.cas[i, :n], single.cas[0])
        torch.testing.assert_close(batch.video_scores[i], single.video_scores[0])
    # Without ``valid`` the padded steps (non-zero CAS from the biases) enter the top-k.
    assert not torch.allclose(unmasked.video_scores[2], batch.video_scores[2])
    with pytest.raises(FustalError, match="valid"):
        net(padded, torch.tensor([12, 0, 3]))
