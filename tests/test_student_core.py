"""TriDet student numerics: model size, batching, label assignment, decoding, losses, soft-NMS."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fustal.config.schema import InferenceSchema
from fustal.data.student_datamodule import make_collate
from fustal.errors import FustalError
from fustal.student.assign import assign_batch, ignored_points, make_points, pad_segments
from fustal.student.decode import (
    DECODING,
    Levels,
    SegmentBatch,
    decode_batch,
    soft_nms_batch,
    trident_offsets,
)
from fustal.student.losses import (
    center_diou_loss,
    center_iou,
    detection_losses,
    sigmoid_focal_loss,
    update_loss_normalizer,
    video_level_loss,
)
from fustal.student.model import TriDet
from tests.reference.softnms_loop import soft_nms_loop


def assign_targets(
    points: torch.Tensor,
    segments: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    ranges: torch.Tensor,
    center_radius: float = 1.5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`assign_batch` of one video: ``segments [M, 2]``, ``labels [M]`` ->
    ``cls_targets [P, C]``, ``reg_targets [P, 2]``, ``positive [P]``."""
    valid = torch.ones(1, len(segments), dtype=torch.bool)
    batch = (segments[None], labels[None], valid, num_classes, ranges, center_radius)
    cls, reg, pos = assign_batch(points, *batch)
    return cls[0], reg[0], pos[0]


def soft_nms(
    segments: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    settings: InferenceSchema = DECODING,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`soft_nms_batch` of one video -> kept segments, decayed scores and labels."""
    if len(segments) == 0:
        return segments.new_zeros(0, 2), scores.new_zeros(0), labels.new_zeros(0)
    valid = torch.ones_like(scores, dtype=torch.bool)
    cands = SegmentBatch(segments[None], scores[None], labels[None], valid[None])
    out = soft_nms_batch(cands, int(labels.max()) + 1, settings)
    keep = out.valid[0]
    return out.segments[0][keep], out.scores[0][keep], out.labels[0][keep]


def decode_video(output: Levels, strides: list[int], num_bins: int) -> np.ndarray:
    """:func:`decode_batch` of one video (per level ``[T_l, ...]``) -> ``[K, 4]`` rows."""
    batched = Levels(*([x[None] for x in getattr(output, field)] for field in Levels._fields))
    return decode_batch(batched, strides, num_bins, DECODING).to_rows()[0]


SMALL = {
    "embd_dim": 32,
    "fpn_dim": 32,
    "head_dim": 32,
    "arch": (2, 2, 3),
    "sgp_mlp_dim": 48,
    "regression_ranges": ((0, 4), (4, 8), (8, 16), (16, 10000)),
    "max_seq_len": 64,
}


def test_default_parameter_count() -> None:
    model = TriDet(2048, 20)
    assert sum(p.numel() for p in model.parameters()) == 15_989_604
    assert model.strides == [1, 2, 4, 8, 16, 32]


def test_depthwise_convs_start_at_zero_and_boundary_bias_is_prior() -> None:
    model = TriDet(16, 3, **SMALL)
    block = model.backbone.branch[0]
    for conv in (block.psi, block.fc, block.conv_w, block.conv_kw, block.global_fc):
        assert torch.count_nonzero(conv.weight) == 0
    assert block.conv_kw.kernel_size == (11,)
    prior = -math.log(0.99 / 0.01)
    for head in (model.cls_head, model.start_head, model.end_head):
        torch.testing.assert_close(head.tower.out.conv.bias, torch.full((3,), prior))


def test_weights_loaded_into_an_eval_mode_model_are_all_used() -> None:
    """Evaluation skips the SGP branch only while its convs are zero: weights with a non-zero
    branch loaded into a model already in eval mode give that model's outputs, and zero ones
    loaded into an eval-mode model with a non-zero branch give the zero-branch outputs."""
    torch.manual_seed(0)
    features, mask = torch.randn(2, 16, 64), torch.ones(2, 64, dtype=torch.bool)
    models = {
        "zero": TriDet(16, 3, **SMALL).eval(),
        "learned": TriDet(16, 3, **SMALL, init_conv_vars=0.1).eval(),
    }
    weights = {
        name: {k: v.clone() for k, v in model.state_dict().items()}
        for name, model in models.items()
    }
    with torch.no_grad():
        reference = {name: model(features, mask).cls_logits for name, model in models.items()}
    assert not torch.equal(reference["zero"][0], reference["learned"][0])
    for into, loaded in (("zero", "learned"), ("learned", "zero")):
        models[into].load_state_dict(weights[loaded])
        with torch.no_grad():
            logits = models[into](features, mask).cls_logits
        for got, want in zip(logits, reference[loaded], strict=True):
            torch.testing.assert_close(got, want)


def pad_features(
    features: list[torch.Tensor], pad_to: int | None, stride: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's collate (:func:`make_collate`) of videos ``[D, T_i]`` without targets ->
    ``features [B, D, T]`` and ``mask [B, T]``."""
    empty = {"segments": torch.zeros(0, 2), "labels": torch.zeros(0, dtype=torch.long)}
    timing = {"offset": 0, "stride_s": 1.0, "window_s": 1.0, "duration": 1.0}
    truth = {"video_label": torch.zeros(1), "gt_segments": None, "gt_labels": None}
    items = [
        {"features": f, "video_id": f"v{i}", "index": i, **empty, **timing, **truth}
        for i, f in enumerate(features)
    ]
    batch = make_collate(pad_to, stride)(items)
    return batch["features"], batch["mask"]


def test_collate_pads_to_a_multiple_of_the_stride_and_masks_the_padding() -> None:
    feats = [torch.ones(4, 10), 2 * torch.ones(4, 3)]
    batch, mask = pad_features(feats, None, 8)
    assert batch.shape == (2, 4, 16)
    assert mask.sum(1).tolist() == [10, 3]
    assert batch[1, :, 3:].abs().sum() == 0 and batch[1, :, :3].eq(2).all()
    batch, mask = pad_features(feats, 24, 8)
    assert batch.shape == (2, 4, 24) and mask.shape == (2, 24)


def test_forward_shapes_and_bad_inputs() -> None:
    model = TriDet(16, 3, **SMALL)
    feats, mask = pad_features([torch.randn(16, 50), torch.randn(16, 20)], 64, model.max_stride)
    out = model(feats, mask)
    assert [x.shape for x in out.cls_logits] == [(2, 64 // s, 3) for s in (1, 2, 4, 8)]
    assert [x.shape for x in out.offsets] == [(2, 64 // s, 2, 17) for s in (1, 2, 4, 8)]
    assert out.masks[1][1].sum() == 10 and out.video_logits.shape == (2, 64, 3)
    assert all((x >= 0).all() for x in out.offsets)
    with pytest.raises(FustalError):
        model(torch.randn(1, 16, 60), torch.ones(1, 60, dtype=torch.bool))
    with pytest.raises(FustalError):
        TriDet(16, 3, **{**SMALL, "regression_ranges": ((0, 4), (4, 10000))})


def test_make_points_positions_ranges_strides() -> None:
    points, ranges = make_points([4, 2], [1, 2], [(0, 4), (4, 100)])
    assert points[:, 0].tolist() == [0, 1, 2, 3, 0, 2]
    assert points[:, 1].tolist() == [1, 1, 1, 1, 2, 2]
    assert ranges.tolist() == [[0, 4]] * 4 + [[4, 100]] * 2


def _two_level_points() -> tuple[torch.Tensor, torch.Tensor]:
    return make_points([16, 8], [1, 2], [(0, 4), (4, 10000)])


def test_assign_center_sampling_and_range() -> None:
    points, ranges = _two_level_points()
    cls, reg, pos = assign_targets(points, torch.tensor([[4.0, 8.0]]), torch.tensor([1]), 3, ranges)
    # level 0: centre region (4.5, 7.5) -> t = 5, 6, 7, reach <= 4; level 1: only t = 6 is
    # strictly inside, but its reach 2 is outside [4, 10000]
    assert torch.nonzero(pos).flatten().tolist() == [5, 6, 7]
    assert cls[pos].tolist() == [[0, 1, 0]] * 3 and cls[~pos].sum() == 0
    assert reg[5].tolist() == [1, 3] and reg[7].tolist() == [3, 1]

    cls, reg, pos = assign_targets(
        points, torch.tensor([[0.0, 16.0]]), torch.tensor([0]), 3, ranges
    )
    # level 0 centre points reach >= 8 (out of [0, 4]); level 1 region (5, 11): t = 6, 8, 10
    assert torch.nonzero(pos).flatten().tolist() == [16 + 3, 16 + 4, 16 + 5]
    assert reg[16 + 3].tolist() == [3, 5]  # (6, 10) / stride 2


def test_assign_shortest_wins_with_ties_multi_hot() -> None:
    points, ranges = _two_level_points()
    segments = torch.tensor([[2.0, 10.0], [4.0, 8.0], [4.0, 8.0]])
    cls, reg, pos = assign_targets(points, segments, torch.tensor([1, 0, 2]), 3, ranges)
    # t = 6 on level 0 is inside all three (reach 4 for [2, 10]); the two length-4 segments win
    assert cls[6].tolist() == [1, 0, 1]
    assert reg[6].tolist() == [2, 2]
    assert cls[5].tolist() == [1, 0, 1] and cls[7].tolist() == [1, 0, 1]
    # level 1: only [2, 10] is in range, at t = 4, 6, 8
    assert torch.nonzero(pos[16:]).flatten().tolist() == [2, 3, 4]
    assert cls[16 + 2 : 16 + 5].tolist() == [[0, 1, 0]] * 3


def test_assign_empty() -> None:
    points, ranges = _two_level_points()
    cls, reg, pos = assign_targets(
        points, torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), 3, ranges
    )
    assert cls.shape == (24, 3) and reg.shape == (24, 2)
    assert not pos.any() and cls.sum() == 0


def test_assign_batch_equals_per_video_and_ignores_padding() -> None:
    points, ranges = _two_level_points()
    videos = [
        (torch.tensor([[2.0, 10.0], [4.0, 8.0]]), torch.tensor([1, 0])),
        (torch.tensor([[0.0, 16.0]]), torch.tensor([2])),
        (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)),
    ]
    segs, labs, valid = pad_segments([v[0] for v in videos], [v[1] for v in videos])
    assert segs.shape == (3, 2, 2) and valid.tolist() == [[True, True], [True, False], [False] * 2]
    labs[1, 1] = 2  # a padded entry with a real-looking segment must still be ignored
    segs[1, 1] = torch.tensor([4.0, 8.0])
    cls, reg, pos = assign_batch(points, segs, labs, valid, 3, ranges)
    for i, (s, lab) in enumerate(videos):
        ref = assign_targets(points, s, lab, 3, ranges)
        for got, want in zip((cls[i], reg[i], pos[i]), ref, strict=True):
            torch.testing.assert_close(got, want)


def _softmax(values: list[float]) -> list[float]:
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def test_ignored_points_lie_in_an_ignored_region_and_in_no_target() -> None:
    # level 0: t = 0..7 (stride 1); level 1: t = 0, 2, 4, 6 (stride 2)
    points, _ = make_points([8, 4], [1, 2], [[0, 4], [4, 100]])
    ignore = torch.tensor([[[2.0, 5.0], [0.0, 7.0]], [[0.0, 1.0], [6.5, 9.0]]])
    ignore_valid = torch.tensor([[True, False], [True, True]])  # row 0's second: padding
    segments = torch.tensor([[[4.0, 6.0]], [[0.0, 0.0]]])
    valid = torch.tensor([[True], [False]])
    got = ignored_points(points, ignore, ignore_valid, segments, valid)
    t = points[:, 0]
    assert got.shape == (2, 12)
    # t = 4, 5 lie in the target [4, 6]: a target keeps its points
    assert t[got[0]].tolist() == [2.0, 3.0, 2.0]
    assert t[got[1]].tolist() == [0.0, 1.0, 7.0, 0.0]
    nothing = ignored_points(
        points, torch.zeros(2, 0, 2), torch.zeros(2, 0, dtype=torch.bool), segments, valid
    )
    assert not nothing.any()


def test_trident_decoding_hand_built() -> None:
    start = torch.tensor([[[0.0], [1.0], [2.0], [3.0]]])
    end = torch.tensor([[[0.5], [-1.0], [2.0], [0.0]]])
    offsets = torch.zeros(1, 4, 2, 3)
    offsets[0, 1, 0] = torch.tensor([0.5, 0.0, 0.0])
    offsets[0, 2, 1] = torch.tensor([0.0, 1.0, 0.0])
    dist = trident_offsets(start, end, offsets, num_bins=2)
    assert dist.shape == (1, 4, 1, 2)
    # t = 0, left: neighbours t-2, t-1 are out of range (logit 0), t reads 0 -> uniform
    assert dist[0, 0, 0, 0].item() == pytest.approx(1.0)
    # t = 1, left logits [0 (oob), start[0] = 0, start[1] = 1] + [0.5, 0, 0]; distances 2, 1, 0
    p = _softmax([0.5, 0.0, 1.0])
    assert dist[0, 1, 0, 0].item() == pytest.approx(2 * p[0] + p[1], abs=1e-6)
    # t = 2, right logits [end[2] = 2, end[3] = 0, 0 (oob)] + [0, 1, 0]; distances 0, 1, 2
    p = _softmax([2.0, 1.0, 0.0])
    assert dist[0, 2, 0, 1].item() == pytest.approx(p[1] + 2 * p[2], abs=1e-6)
    # t = 3, right: [end[3] = 0, 0, 0] -> uniform -> 1
    assert dist[0, 3, 0, 1].item() == pytest.approx(1.0)


def test_decode_video_sharp_boundaries() -> None:
    num_bins, length, stride = 2, 8, 2
    cls = torch.full((length, 2), -20.0)
    cls[3, 1] = 2.0
    start = torch.zeros(length, 2)
    end = torch.zeros(length, 2)
    start[1, 1] = 60.0  # t = 3 - 2 + 0 -> left distance 2 bins
    end[4, 1] = 60.0  # t = 3 + 1 -> right distance 1 bin
    offsets = torch.zeros(length, 2, num_bins + 1)
    mask = torch.ones(length, dtype=torch.bool)
    rows = decode_video(Levels([cls], [start], [end], [offsets], [mask]), [stride], num_bins)
    assert rows.shape == (1, 4)
    label, score, seg_start, seg_end = rows[0]
    assert label == 1 and score == pytest.approx(1 / (1 + math.exp(-2.0)), rel=1e-5)
    assert seg_start == pytest.approx(6 - 2 * 2) and seg_end == pytest.approx(6 + 1 * 2)
    mask[3] = False
    rows = decode_video(Levels([cls], [start], [end], [offsets], [mask]), [stride], num_bins)
    assert rows.shape == (0, 4)


def test_focal_and_diou_against_hand_values() -> None:
    focal = sigmoid_focal_loss(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0]))
    p = 1 / (1 + math.exp(-2.0))
    expected = [0.25 * math.log(2) * 0.25, 0.75 * -math.log(1 - p) * p**2]
    torch.testing.assert_close(focal, torch.tensor(expected))
    pred, target = torch.tensor([[1.0, 3.0]]), torch.tensor([[2.0, 2.0]])
    assert center_iou(pred, target).item() == pytest.approx(0.6)
    # 1 - IoU + (centre offset 1 / enclosing 5)^2
    assert center_diou_loss(pred, target).item() == pytest.approx(1 - 0.6 + 0.04)
    assert center_diou_loss(target, target).item() == pytest.approx(0.0)
    assert update_loss_normalizer(100.0, 0) == pytest.approx(90.1)
    assert update_loss_normalizer(100.0, 30) == pytest.approx(93.0)


def test_detection_losses_weighting_and_normalizer() -> None:
    torch.manual_seed(0)
    num_bins, length = 2, 6
    cls = [torch.randn(1, length, 2)]
    start, end = [torch.randn(1, length, 2)], [torch.randn(1, length, 2)]
    offsets = [torch.rand(1, length, 2, num_bins + 1)]
    masks = [torch.tensor([[True] * 5 + [False]])]
    cls_t = torch.zeros(1, length, 2)
    cls_t[0, 2, 1] = 1.0
    cls_t[0, 5, 0] = 1.0  # on an invalid point: ignored
    reg_t = torch.zeros(1, length, 2)
    reg_t[0, 2] = torch.tensor([1.0, 0.5])
    out = detection_losses(Levels(cls, start, end, offsets, masks), cls_t, reg_t, 7.0, num_bins)
    pred = trident_offsets(start[0], end[0], offsets[0], num_bins)[0, 2, 1][None]
    weight = torch.ones(1, length, 2)
    weight[0, 2, 1] = center_iou(pred, reg_t[0, 2][None])[0] ** 0.2
    focal = sigmoid_focal_loss(cls[0], cls_t) * weight
    torch.testing.assert_close(out["cls"], focal[0, :5].sum() / 7.0)
    torch.testing.assert_close(out["reg"], center_diou_loss(pred, reg_t[0, 2][None]).sum() / 7.0)
    levels = Levels(cls, start, end, offsets, masks)
    # ignored points leave the classification loss, not the regression of a positive
    ignore = torch.tensor([[True, False, False, True, False, False]])
    out_ignored = detection_losses(levels, cls_t, reg_t, 7.0, num_bins, ignore=ignore)
    torch.testing.assert_close(out_ignored["cls"], focal[0, [1, 2, 4]].sum() / 7.0)
    torch.testing.assert_close(out_ignored["reg"], out["reg"])
    empty = detection_losses(levels, torch.zeros_like(cls_t), reg_t, 7.0, num_bins)
    assert empty["reg"].item() == 0.0
    torch.testing.assert_close(
        empty["cls"], sigmoid_focal_loss(cls[0][0, :5], 0 * cls[0][0, :5]).sum() / 7.0
    )


def test_video_level_loss_per_video_topk() -> None:
    logits = torch.zeros(1, 6, 2)
    logits[0, :, 0] = torch.tensor([3.0, 1.0, 0.0, 0.0, 0.0, 9.0])
    mask = torch.tensor([[True] * 5 + [False]])
    # valid length 5 -> k = 1: class 0 top-1 = 3 (the 9 is padding), class 1 = 0
    p0 = math.exp(3) / (math.exp(3) + 1)
    expected = -(math.log(p0) + math.log(1 - (1 - p0))) / 2  # label [1, 0] -> target [1, 0]
    loss = video_level_loss(logits, mask, torch.tensor([[1.0, 0.0]]))
    assert loss.item() == pytest.approx(expected, rel=1e-5)

    torch.manual_seed(1)
    logits = torch.randn(2, 12, 3)
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[0, :12], mask[1, :5] = True, True
    labels = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    both = video_level_loss(logits, mask, labels)
    single = [
        video_level_loss(logits[i : i + 1], mask[i : i + 1], labels[i : i + 1]) for i in (0, 1)
    ]
    torch.testing.assert_close(both, (single[0] + single[1]) / 2)
    # k for video 0 is 12 // 5 = 2 and for video 1 is 1: not pooled over the batch
    top2 = logits[0].topk(2, dim=0).values.mean(0)
    scores = torch.softmax(top2, 0)
    ref = torch.nn.functional.binary_cross_entropy(scores, torch.tensor([0.5, 0.5, 0.0]))
    torch.testing.assert_close(single[0], ref)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_soft_nms_matches_loop_reference(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    n = 80
    start = torch.rand(n, generator=gen, dtype=torch.float64) * 50
    segments = torch.stack(
        (start, start + 0.5 + 10 * torch.rand(n, generator=gen, dtype=torch.float64)), 1
    )
    scores = torch.rand(n, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 4, (n,), generator=gen)
    max_num = 2000 if seed < 2 else 25
    settings = InferenceSchema(max_seg_num=max_num, min_score=0.01)
    segs, sc, lab = soft_nms(segments, scores, labels, settings)
    ref = soft_nms_loop(
        segments.tolist(), scores.tolist(), labels.tolist(), max_seg_num=max_num, min_score=0.01
    )
    got = torch.cat((lab[:, None].double(), sc[:, None], segs), 1).numpy()
    assert got.shape == (len(ref), 4)
    np.testing.assert_allclose(got, np.array(ref), rtol=1e-12, atol=1e-12)
    assert (np.diff(got[:, 1]) <= 0).all()


def test_soft_nms_empty_and_decay() -> None:
    segs, sc, lab = soft_nms(torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert segs.shape == (0, 2) and sc.shape == (0,) and lab.shape == (0,)
    segments = torch.tensor([[0.0, 10.0], [0.0, 10.0], [0.0, 5.0], [20.0, 30.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    labels = torch.tensor([0, 0, 0, 1])
    segs, sc, lab = soft_nms(segments, scores, labels)
    # the duplicate decays by exp(-1 / 0.5); [0, 5] has IoU 0.5 with the first
    expected = sorted(
        [0.9, 0.6, 0.7 * math.exp(-0.25 / 0.5), 0.8 * math.exp(-2.0) * math.exp(-0.25 / 0.5)],
        reverse=True,
    )
    torch.testing.assert_close(sc, torch.tensor(expected))
    assert lab.tolist() == [0, 1, 0, 0]


def test_classification_loss_trains_the_offsets_through_the_iou_weight() -> None:
    """The focal weight ``IoU ** 0.2`` is not detached (research code, TriDet): with the
    regression loss left out, the offsets, start/end logits still receive gradient."""
    torch.manual_seed(0)
    num_bins, length = 2, 6
    cls = [torch.randn(1, length, 2, requires_grad=True)]
    start = [torch.randn(1, length, 2, requires_grad=True)]
    end = [torch.randn(1, length, 2, requires_grad=True)]
    offsets = [torch.rand(1, length, 2, num_bins + 1, requires_grad=True)]
    masks = [torch.ones(1, length, dtype=torch.bool)]
    cls_t = torch.zeros(1, length, 2)
    cls_t[0, 2, 1] = 1.0
    reg_t = torch.zeros(1, length, 2)
    reg_t[0, 2] = torch.tensor([1.0, 0.5])
    out = detection_losses(Levels(cls, start, end, offsets, masks), cls_t, reg_t, 1.0, num_bins)
    out["cls"].backward()
    assert offsets[0].grad[0, 2].abs().sum() > 0
    assert start[0].grad[0, :, 1].abs().sum() > 0 and end[0].grad[0, :, 1].abs().sum() > 0
    # only the positive point's decoding carries the IoU gradient
    assert offsets[0].grad[0, [0, 1, 3, 4, 5]].abs().sum() == 0


def _random_candidates(seed: int, batch: int = 3, num: int = 60, classes: int = 4):
    from fustal.student.decode import SegmentBatch

    gen = torch.Generator().manual_seed(seed)
    start = torch.rand(batch, num, generator=gen) * 40
    length = 0.5 + 8 * torch.rand(batch, num, generator=gen)
    scores = torch.rand(batch, num, generator=gen) ** 2
    labels = torch.randint(0, classes, (batch, num), generator=gen)
    valid = torch.rand(batch, num, generator=gen) > 0.2
    valid[-1] = False  # a video without candidates
    if seed % 3 == 0:
        scores[0] *= 0.4  # a video where no candidate passes 0.4: its best one is the target
    return SegmentBatch(torch.stack((start - 3, start + length), -1), scores, labels, valid)


@pytest.mark.parametrize("seed", range(12))
def test_teacher_targets_filtered_equal_unfiltered(seed: int) -> None:
    """Soft-NMS on the candidates above the teacher's threshold (plus each video's best) gives
    the same targets as soft-NMS on all candidates followed by the threshold."""
    from fustal.student.decode import soft_nms_batch, teacher_targets

    cands = _random_candidates(seed)
    fast = teacher_targets(cands, 4, score_thresh=0.4)
    full = soft_nms_batch(cands, 4)
    for b in range(cands.scores.shape[0]):
        keep = full.valid[b] & (full.scores[b] > 0.4)
        if not keep.any() and full.valid[b].any():
            keep = torch.zeros_like(keep)
            keep[0] = True  # sorted by score: the single best
        expected = torch.cat(
            (
                full.labels[b][keep, None].float(),
                full.scores[b][keep, None],
                full.segments[b][keep],
            ),
            1,
        )
        expected[:, 2:] = expected[:, 2:].clamp(min=0)
        got = fast.to_rows()[b]
        np.testing.assert_array_equal(got, expected.double().numpy())
    assert len(fast.to_rows()[-1]) == 0


def test_teacher_targets_of_a_batch_without_any_candidate_are_empty() -> None:
    """No candidate in any video (all under ``pre_nms_thresh``, e.g. an untrained net): no
    targets, not an error."""
    from fustal.student.decode import SegmentBatch, teacher_targets

    empty = SegmentBatch(
        torch.zeros(3, 0, 2),
        torch.zeros(3, 0),
        torch.zeros(3, 0, dtype=torch.long),
        torch.zeros(3, 0, dtype=torch.bool),
    )
    targets = teacher_targets(empty, 4, score_thresh=0.4)
    assert [len(rows) for rows in targets.to_rows()] == [0, 0, 0]


def test_soft_nms_batch_over_videos_matches_the_loop_per_video() -> None:
    from fustal.student.decode import soft_nms_batch

    cands = _random_candidates(5, batch=4, num=50)
    cands = cands._replace(
        segments=cands.segments.double(), scores=cands.scores.double().clamp(min=0.002)
    )
    out = soft_nms_batch(cands, 4, InferenceSchema(max_seg_num=30))
    for b, rows in enumerate(out.to_rows()):
        v = cands.valid[b]
        ref = soft_nms_loop(
            cands.segments[b][v].tolist(),
            cands.scores[b][v].tolist(),
            cands.labels[b][v].tolist(),
            max_seg_num=30,
        )
        np.testing.assert_allclose(rows, np.array(ref).reshape(-1, 4), rtol=1e-12, atol=1e-12)
