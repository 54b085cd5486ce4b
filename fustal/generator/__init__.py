"""Stage 1: the cross-video contrastive pseudo-label generator (CoLA-style)."""

from fustal.generator.losses import (
    action_loss,
    contrast_matrix,
    cross_video_contrast,
    info_nce,
    same_label_mask,
    snippet_contrast,
)
from fustal.generator.mining import (
    Snippets,
    binary_dilation_1d,
    binary_erosion_1d,
    hard_regions,
    median_binarize,
    mine_snippets,
    snippet_count,
)
from fustal.generator.module import GeneratorModule
from fustal.generator.network import GeneratorNet, GeneratorOutput, video_scores_from_cas

__all__ = [
    "GeneratorModule",
    "GeneratorNet",
    "GeneratorOutput",
    "Snippets",
    "action_loss",
    "binary_dilation_1d",
    "binary_erosion_1d",
    "contrast_matrix",
    "cross_video_contrast",
    "hard_regions",
    "info_nce",
    "median_binarize",
    "mine_snippets",
    "same_label_mask",
    "snippet_contrast",
    "snippet_count",
    "video_scores_from_cas",
]
