"""Stage 1: the cross-video contrastive pseudo-label generator (CoLA-style). The names that
configs instantiate (``_target_``) are importable from here."""

from fustal.generator.module import GeneratorModule
from fustal.generator.network import GeneratorNet

__all__ = ["GeneratorModule", "GeneratorNet"]
