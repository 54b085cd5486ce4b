"""Plain-loop reference of per-class Gaussian soft-NMS (the semantics of ActionFormer/TriDet's
``softnms_1d_cpu`` with method 2, applied class by class, then sorted and truncated)."""

from __future__ import annotations

import math


def soft_nms_loop(
    segments: list[tuple[float, float]],
    scores: list[float],
    labels: list[int],
    sigma: float = 0.5,
    min_score: float = 0.001,
    max_seg_num: int = 2000,
    eps: float = 1e-8,
) -> list[tuple[int, float, float, float]]:
    """Rows ``(label, score, start, end)`` sorted by score (descending), at most
    ``max_seg_num``. In each class: keep the best remaining segment (lowest index on ties),
    multiply every other remaining score by ``exp(-iou^2 / sigma)``, drop those below
    ``min_score``; segments starting below ``min_score`` never enter."""
    kept: list[tuple[int, float, float, float]] = []
    for label in sorted(set(labels)):
        remaining = [
            [i, scores[i]]
            for i in range(len(scores))
            if labels[i] == label and scores[i] >= min_score
        ]
        picked = 0
        while remaining and picked < max_seg_num:
            best = 0
            for j in range(1, len(remaining)):
                if remaining[j][1] > remaining[best][1]:
                    best = j
            index, score = remaining.pop(best)
            start, end = segments[index]
            kept.append((label, score, start, end))
            picked += 1
            survivors = []
            for other, other_score in remaining:
                o_start, o_end = segments[other]
                inter = max(0.0, min(end, o_end) - max(start, o_start))
                union = max((end - start) + (o_end - o_start) - inter, eps)
                iou = inter / union
                new_score = other_score * math.exp(-(iou * iou) / sigma)
                if new_score >= min_score:
                    survivors.append([other, new_score])
            remaining = survivors
    kept.sort(key=lambda row: -row[1])
    return kept[:max_seg_num]
