"""Evaluation: ActivityNet detection mAP, results files and pseudo-label quality."""
