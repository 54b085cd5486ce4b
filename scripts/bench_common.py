"""What the benchmark scripts share: the research-style EMA teacher, the baseline fustal's
filtered teacher is measured against."""

from __future__ import annotations

from fustal.config.schema import InferenceSchema
from fustal.student.decode import DECODING, SegmentBatch, soft_nms_batch


def research_teacher_targets(
    cands: SegmentBatch, num_classes: int, thresh: float = 0.4, settings: InferenceSchema = DECODING
) -> SegmentBatch:
    """The research code's teacher: soft-NMS of every candidate ``[B, N]``, then the detections
    scoring above ``thresh`` (or each video's single best one), start and end clamped at 0
    (equal targets to :func:`fustal.student.decode.teacher_targets`, which runs soft-NMS on the
    candidates above the threshold only)."""
    dets = soft_nms_batch(cands, num_classes, settings)
    keep = dets.valid & (dets.scores > thresh)
    if keep.shape[1]:  # rows are sorted by score: the first valid entry is the best
        keep[:, 0] |= ~keep.any(dim=1) & dets.valid[:, 0]
    return dets._replace(segments=dets.segments.clamp(min=0.0), valid=keep)
