"""Pictures of a run: per-video timelines (ground truth, CAS, actionness, pseudo labels, student
detections) and the precision/recall of pseudo labels at several tIoU thresholds.

Drawing uses matplotlib's object API with the Agg canvas (no pyplot, no display needed).
"""
