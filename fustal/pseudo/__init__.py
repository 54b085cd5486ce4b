"""Pseudo labels: CAS proposals (stage 1) and the prior-based filter (stage 2)."""
