"""The TriDet student network."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from fustal.config.schema import InferenceSchema
from fustal.errors import FustalError
from fustal.student.assign import assign_batch, ignored_points, make_points
from fustal.student.backbone import IdentityNeck, SGPBackbone
from fustal.student.decode import (
    DECODING,
    Levels,
    SegmentBatch,
    candidates,
    decode_batch,
    decode_points,
    level_scores,
)
from fustal.student.heads import ClassHead, OffsetHead

DEFAULT_RANGES = ((0, 4), (4, 8), (8, 16), (16, 32), (32, 64), (64, 10000))


@dataclass
class TriDetOutput:
    """Per-level outputs (level l has ``T_l = T / stride_l`` points).

    ``cls_logits``, ``start_logits``, ``end_logits``: ``[B, T_l, C]``; ``offsets``:
    ``[B, T_l, 2, num_bins + 1]`` (left, right); ``masks``: ``[B, T_l]`` bool;
    ``video_logits``: ``[B, T, C]`` level-0 class logits after the video-level dropout.
    """

    cls_logits: list[Tensor]
    start_logits: list[Tensor]
    end_logits: list[Tensor]
    offsets: list[Tensor]
    masks: list[Tensor]
    video_logits: Tensor


class TriDet(nn.Module):
    """TriDet: SGP backbone, identity neck with LayerNorm, class / start / end / offset heads.

    Every number of the reference configuration is a keyword argument with its default.
    ``regression_ranges`` needs ``arch[2] + 1`` rows (one per pyramid level).
    """

    def __init__(
        self,
        feature_dim: int,
        num_classes: int,
        embd_dim: int = 512,
        fpn_dim: int = 512,
        head_dim: int = 512,
        arch: Sequence[int] = (2, 2, 5),
        embd_kernel: int = 3,
        sgp_mlp_dim: int = 768,
        sgp_kernel: int = 1,
        k: float = 5,
        scale_factor: int = 2,
        downsample_kernel: int = 3,
        num_bins: int = 16,
        head_num_layers: int = 3,
        head_kernel: int = 3,
        max_seq_len: int = 2304,
        drop_path: float = 0.1,
        layer_scale_init: float = 1e-4,
        init_conv_vars: float = 0.0,
        group_norm_groups: int = 16,
        prior_prob: float = 0.01,
        regression_ranges: Sequence[Sequence[float]] = DEFAULT_RANGES,
        center_sample_radius: float = 1.5,
        video_dropout: float = 0.7,
        input_noise: float = 0.0005,
    ):
        super().__init__()
        if fpn_dim != embd_dim:
            raise FustalError(f"fpn_dim: the identity neck needs fpn_dim == embd_dim ({embd_dim})")
        if len(arch) != 3:
            raise FustalError(f"arch: expected (n_embed, n_stem, n_branch), got {tuple(arch)}")
        num_levels = int(arch[2]) + 1
        if len(regression_ranges) != num_levels:
            raise FustalError(
                f"regression_ranges: {len(regression_ranges)} rows for {num_levels} pyramid "
                f"levels (arch {tuple(arch)})"
            )
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.num_bins = num_bins
        self.max_seq_len = max_seq_len
        self.strides = [scale_factor**i for i in range(num_levels)]
        self.max_stride = self.strides[-1]
        self.regression_ranges = [tuple(float(v) for v in r) for r in regression_ranges]
        self.center_sample_radius = center_sample_radius
        self.input_noise = input_noise
        self._points: dict[tuple[int, str], tuple[Tensor, Tensor]] = {}
        self.backbone = SGPBackbone(
            feature_dim,
            embd_dim,
            arch,
            embd_kernel,
            drop_path,
            mlp_dim=sgp_mlp_dim,
            window=sgp_kernel,
            k=k,
            scale_factor=scale_factor,
            downsample_kernel=downsample_kernel,
            layer_scale_init=layer_scale_init,
            init_conv_vars=init_conv_vars,
            group_norm_groups=group_norm_groups,
        )
        self.neck = IdentityNeck(fpn_dim, num_levels)
        head: dict[str, Any] = {"num_layers": head_num_layers, "kernel": head_kernel}
        cls: dict[str, Any] = {"num_classes": num_classes, "prior_prob": prior_prob, **head}
        self.cls_head = ClassHead(fpn_dim, head_dim, **cls)
        self.start_head = ClassHead(fpn_dim, head_dim, detach=True, **cls)
        self.end_head = ClassHead(fpn_dim, head_dim, detach=True, **cls)
        self.offset_head = OffsetHead(fpn_dim, head_dim, num_levels, num_bins, **head)
        self.video_dropout = nn.Dropout(video_dropout)

    def pyramid(self, features: Tensor, mask: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Backbone and neck: ``features [B, D, T]`` (T a multiple of ``max_stride``),
        ``mask [B, T]`` bool -> per level ``[B, E, T_l]`` features and ``[B, T_l]`` masks.

        In training mode, ``N(0, input_noise^2)`` is first added to the whole padded batch
        (padding included), as in the research code; evaluation (and the EMA teacher, which
        predicts in eval mode) sees clean features."""
        if features.dim() != 3 or features.shape[1] != self.feature_dim:
            raise FustalError(
                f"features: expected [B, {self.feature_dim}, T], got {tuple(features.shape)}"
            )
        if mask.shape != (features.shape[0], features.shape[2]):
            raise FustalError(
                f"mask: expected {(features.shape[0], features.shape[2])}, got {tuple(mask.shape)}"
            )
        if features.shape[2] % self.max_stride != 0:
            raise FustalError(
                f"features: length {features.shape[2]} is not a multiple of {self.max_stride}"
            )
        if self.training and self.input_noise > 0:
            features = features + self.input_noise * torch.randn_like(features)
        feats, masks = self.backbone(features, mask.bool())
        return self.neck(feats), masks

    def boundary_heads(
        self, feats: list[Tensor], masks: list[Tensor], levels: Sequence[int]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Start logits, end logits and offsets of the given pyramid ``levels`` only."""
        sub_feats, sub_masks = [feats[i] for i in levels], [masks[i] for i in levels]
        return (
            self.start_head(sub_feats, sub_masks),
            self.end_head(sub_feats, sub_masks),
            self.offset_head(sub_feats, sub_masks, levels),
        )

    def forward(self, features: Tensor, mask: Tensor) -> TriDetOutput:
        """``features [B, D, T]`` (T a multiple of ``max_stride``), ``mask [B, T]`` bool ->
        every head on every level (see :meth:`pyramid`)."""
        feats, masks = self.pyramid(features, mask)
        cls_logits = self.cls_head(feats, masks)
        start, end, offsets = self.boundary_heads(feats, masks, range(len(feats)))
        return TriDetOutput(
            cls_logits=cls_logits,
            start_logits=start,
            end_logits=end,
            offsets=offsets,
            masks=masks,
            video_logits=self.video_dropout(cls_logits[0]),
        )

    @torch.no_grad()
    def teacher_candidates(
        self,
        features: Tensor,
        mask: Tensor,
        score_thresh: float,
        settings: InferenceSchema = DECODING,
    ) -> SegmentBatch:
        """What a teacher's target selection reads (:func:`decode.teacher_selection`), decoded
        from the fewest head outputs: per level the ``pre_nms_topk`` best scores as always, but
        only those above ``score_thresh`` (and, for a video without any, its best one) are
        decoded, and the start/end/offset heads run only on the levels holding them. No other
        candidate can be selected, so the selection equals that from every candidate. (When a
        video's best candidate is decoded shorter than ``min_duration``, its next best could lie
        anywhere: every candidate is then decoded.)"""
        feats, masks = self.pyramid(features, mask)
        cls_logits = self.cls_head(feats, masks)
        pre_nms_thresh, pre_nms_topk = settings.pre_nms_thresh, settings.pre_nms_topk
        tops = [level_scores(c, m, pre_nms_topk) for c, m in zip(cls_logits, masks, strict=True)]
        peaks = torch.stack([scores[:, 0] for scores, _ in tops], dim=1)  # [B, L]
        thresh = max(score_thresh, pre_nms_thresh)
        picks = [scores > thresh for scores, _ in tops]
        fallback = ~torch.stack([pick[:, 0] for pick in picks], dim=1).any(dim=1)
        best_level = peaks.argmax(dim=1)
        for level, pick in enumerate(picks):
            pick[:, 0] |= fallback & (best_level == level) & (peaks[:, level] > pre_nms_thresh)
        counts = torch.stack([pick.sum(dim=1) for pick in picks], dim=1).max(dim=0).values.tolist()
        levels = [level for level, count in enumerate(counts) if count]
        start, end, offsets = self.boundary_heads(feats, masks, levels)
        parts = []
        for level, s, e, o in zip(levels, start, end, offsets, strict=True):
            pick = picks[level]
            chosen = torch.argsort((~pick).to(torch.int8), dim=1, stable=True)[:, : counts[level]]
            scores, flat = (x.gather(1, chosen) for x in tops[level])
            part = decode_points(
                s, e, o, scores, flat, self.strides[level], self.num_bins, settings
            )
            parts.append(part._replace(valid=part.valid & pick.gather(1, chosen)))
        if not parts:
            empty = cls_logits[0].new_zeros(features.shape[0], 0)
            return SegmentBatch(
                empty[..., None].expand(-1, -1, 2), empty, empty.long(), empty.bool()
            )
        cands = SegmentBatch(*(torch.cat(x, dim=1) for x in zip(*parts, strict=True)))
        best_valid = torch.where(cands.valid, cands.scores, -1.0).max(dim=1).values
        peak = peaks.max(dim=1).values
        if bool((fallback & (best_valid < peak) & (peak > pre_nms_thresh)).any()):
            start, end, offsets = self.boundary_heads(feats, masks, range(len(feats)))
            every = Levels(cls_logits, start, end, offsets, masks)
            return candidates(every, self.strides, self.num_bins, settings)
        return cands

    def points(
        self, length: int, device: torch.device | str | None = None
    ) -> tuple[Tensor, Tensor]:
        """Points ``[P, 2]`` (t, stride) and ranges ``[P, 2]`` for an input of ``length`` steps
        (cached per length and device: built once, not copied to the device every step)."""
        key = (length, str(device))
        if key not in self._points:
            lengths = [length // s for s in self.strides]
            self._points[key] = make_points(lengths, self.strides, self.regression_ranges, device)
        return self._points[key]

    def targets(
        self, output: TriDetOutput, segments: Tensor, labels: Tensor, valid: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Assigned ``cls_targets [B, P, C]`` and ``reg_targets [B, P, 2]`` of a batch whose
        targets are padded: ``segments [B, M, 2]``, ``labels [B, M]``, ``valid [B, M]``."""
        points, ranges = self.points(output.video_logits.shape[1], output.video_logits.device)
        cls, reg, _ = assign_batch(
            points, segments, labels, valid, self.num_classes, ranges, self.center_sample_radius
        )
        return cls, reg

    def ignored(
        self,
        output: TriDetOutput,
        ignore: Tensor,
        ignore_valid: Tensor,
        segments: Tensor,
        valid: Tensor,
    ) -> Tensor:
        """``[B, P]`` bool: the points in an ``ignore`` segment ``[B, K, 2]`` (``ignore_valid
        [B, K]``) and in no target segment (:func:`~fustal.student.assign.ignored_points`)."""
        points, _ = self.points(output.video_logits.shape[1], output.video_logits.device)
        return ignored_points(points, ignore, ignore_valid, segments, valid)

    def candidates(
        self, output: TriDetOutput, settings: InferenceSchema = DECODING
    ) -> SegmentBatch:
        """Decoded candidates ``[B, N]`` before soft-NMS (see :func:`decode.candidates`)."""
        return candidates(output, self.strides, self.num_bins, settings)

    @torch.no_grad()
    def detect(self, output: TriDetOutput, settings: InferenceSchema = DECODING) -> SegmentBatch:
        """Detections ``[B, K]`` (grid units, sorted by score per video) after soft-NMS."""
        return decode_batch(output, self.strides, self.num_bins, settings)
