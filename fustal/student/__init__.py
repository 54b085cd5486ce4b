"""Stage 3: the TriDet student (model, label assignment, losses, decoding) and its module."""

from fustal.student.assign import assign_targets, make_points
from fustal.student.decode import decode_video, soft_nms, trident_offsets
from fustal.student.losses import (
    center_diou_loss,
    center_iou,
    detection_losses,
    sigmoid_focal_loss,
    update_loss_normalizer,
    video_level_loss,
)
from fustal.student.model import TriDet, TriDetOutput, pad_batch
from fustal.student.module import StudentModule

__all__ = [
    "StudentModule",
    "TriDet",
    "TriDetOutput",
    "assign_targets",
    "center_diou_loss",
    "center_iou",
    "decode_video",
    "detection_losses",
    "make_points",
    "pad_batch",
    "sigmoid_focal_loss",
    "soft_nms",
    "trident_offsets",
    "update_loss_normalizer",
    "video_level_loss",
]
