"""MultiBox priors: k-means over the training set's normalised ground-truth boxes with distance 1 - IoU.

Boxes are normalised by the image size (``[0, 1]`` xyxy, the frame MultiBox predicts in). Deterministic for a
given seed: k-means++-style seeding with a seeded generator, Lloyd iterations (assign by highest IoU, update by
the coordinate mean), empty clusters re-seeded with the box worst covered by the current priors.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from detector.boxes import iou_matrix
from detector.structures import ImageRecord

__all__ = ["normalised_boxes", "kmeans_priors"]

log = logging.getLogger(__name__)


def normalised_boxes(records: Sequence[ImageRecord]) -> np.ndarray:
    """All non-ignored ground-truth boxes of ``records`` divided by their image size: float32 ``[M, 4]``."""
    out = []
    for r in records:
        b = r.boxes[~r.ignore].astype(np.float64)
        if len(b):
            out.append(b / np.array([r.width, r.height, r.width, r.height], np.float64))
    return np.clip(np.concatenate(out), 0, 1).astype(np.float32) if out else np.zeros((0, 4), np.float32)


def kmeans_priors(boxes: np.ndarray, k: int, seed: int = 0, iterations: int = 100) -> np.ndarray:
    """``k`` priors (float32 ``[k, 4]``, normalised xyxy) clustering ``boxes`` ``[M, 4]`` under 1 - IoU.

    With fewer distinct boxes than ``k``, the remaining priors are a deterministic grid of square boxes
    at three scales (logged), so a model always has ``k`` outputs.
    """
    if k <= 0:
        raise ValueError(f"num_priors must be positive, got {k}")
    boxes = np.unique(np.asarray(boxes, np.float32).reshape(-1, 4), axis=0)
    rng = np.random.default_rng(seed)
    if len(boxes) <= k:
        extra = _grid_priors(k - len(boxes))
        if len(extra):
            log.warning("only %d distinct training boxes for %d priors: adding %d grid priors",
                        len(boxes), k, len(extra))
        return np.concatenate([boxes, extra]).astype(np.float32)
    # k-means++ seeding with distance 1 - IoU
    centres = [boxes[rng.integers(len(boxes))]]
    best = 1 - iou_matrix(boxes, np.array(centres))[:, 0]
    for _ in range(1, k):
        p = best ** 2
        p = p / p.sum() if p.sum() > 0 else np.full(len(boxes), 1 / len(boxes))
        centres.append(boxes[rng.choice(len(boxes), p=p)])
        best = np.minimum(best, 1 - iou_matrix(boxes, centres[-1][None])[:, 0])
    centres = np.array(centres, np.float64)
    assign = None
    for it in range(iterations):
        ious = iou_matrix(boxes, centres)
        new_assign = ious.argmax(axis=1)
        if assign is not None and np.array_equal(new_assign, assign):
            break
        assign = new_assign
        worst = np.argsort(ious.max(axis=1))  # worst-covered boxes first
        w_i = 0
        for c in range(k):
            members = boxes[assign == c]
            if len(members):
                centres[c] = members.mean(axis=0)
            else:
                centres[c] = boxes[worst[w_i]]
                w_i += 1
    log.info("k-means priors: %d boxes -> %d priors, mean best IoU %.3f", len(boxes), k,
             iou_matrix(boxes, centres).max(axis=1).mean())
    return centres.astype(np.float32)


def _grid_priors(n: int) -> np.ndarray:
    if n <= 0:
        return np.zeros((0, 4), np.float32)
    out = []
    for size, steps in ((0.8, 2), (0.5, 3), (0.3, 5), (0.15, 8), (0.08, 12)):
        for cy in np.linspace(size / 2, 1 - size / 2, steps):
            for cx in np.linspace(size / 2, 1 - size / 2, steps):
                out.append([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2])
    grid = np.array(out, np.float32)
    reps = int(np.ceil(n / len(grid)))
    return np.tile(grid, (reps, 1))[:n]
