"""Pseudo labels: CAS proposals (stage 1) and the prior-based filter (stage 2)."""

from fustal.pseudo.filters import (
    filter_rows,
    iou_density_mask,
    overlap_density,
    prior_filter,
)
from fustal.pseudo.nms import nms_research
from fustal.pseudo.proposals import (
    ACTIONNESS_THRESHOLDS,
    CAS_THRESHOLDS,
    PROPOSAL_COLUMNS,
    cas_to_proposals,
)

__all__ = [
    "ACTIONNESS_THRESHOLDS",
    "CAS_THRESHOLDS",
    "PROPOSAL_COLUMNS",
    "cas_to_proposals",
    "filter_rows",
    "iou_density_mask",
    "nms_research",
    "overlap_density",
    "prior_filter",
]
