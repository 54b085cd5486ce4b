"""fustal: weakly-supervised temporal action localization with pseudo labels (FuSTAL)."""

__version__ = "0.1.0"
