"""The MultiBox loss (Erhan et al. 2014): an optimal bipartite assignment of ground-truth boxes to
predictions, then location L2 on matched pairs and a logistic confidence loss on all predictions.

For one image with predictions ``l_i`` (normalised xyxy), confidences ``c_i = sigmoid(z_i)`` and ground truth
``g_j``: the assignment ``x`` (each ground truth to exactly one prediction) minimises

    F(x) = alpha/2 * sum_ij x_ij ||l_i - g_j||^2  -  sum_ij x_ij log c_i  -  sum_i (1 - sum_j x_ij) log(1 - c_i)

which, up to a constant independent of ``x``, is the linear assignment with cost
``alpha/2 ||l_i - g_j||^2 - log c_i + log(1 - c_i) = alpha/2 ||l_i - g_j||^2 - z_i``
(``scipy.optimize.linear_sum_assignment``). The loss is ``F`` at that assignment, averaged over the batch.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

__all__ = ["assignment_cost", "match", "multibox_loss"]


def assignment_cost(loc: np.ndarray, logits: np.ndarray, gt: np.ndarray, alpha: float) -> np.ndarray:
    """Cost ``[K, G]`` of assigning ground truth j to prediction i (constant terms dropped)."""
    d = ((loc[:, None, :] - gt[None, :, :]) ** 2).sum(-1)
    return alpha / 2 * d - logits[:, None]


def match(loc: np.ndarray, logits: np.ndarray, gt: np.ndarray, alpha: float) -> np.ndarray:
    """Index of the prediction assigned to each ground-truth box (int64 ``[G]``); requires G <= K."""
    if len(gt) == 0:
        return np.zeros(0, np.int64)
    if len(gt) > len(loc):
        raise ValueError(f"{len(gt)} ground-truth boxes but only {len(loc)} predictions")
    rows, cols = linear_sum_assignment(assignment_cost(loc, logits, gt, alpha))
    out = np.empty(len(gt), np.int64)
    out[cols] = rows
    return out


def multibox_loss(loc: torch.Tensor, logits: torch.Tensor, gts: Sequence[torch.Tensor], alpha: float
                  ) -> tuple[torch.Tensor, dict]:
    """Batch loss. ``loc`` ``[B, K, 4]`` normalised xyxy, ``logits`` ``[B, K]``, ``gts`` B tensors ``[G_b, 4]``
    (normalised; an image may have none: then every prediction is a negative). Returns (loss, parts)."""
    b, k = logits.shape
    targets = torch.zeros_like(logits)
    loc_terms = []
    for i, gt in enumerate(gts):
        gt = gt[:k]  # more objects than priors: the extra ones cannot be assigned
        if len(gt) == 0:
            continue
        idx = torch.from_numpy(match(loc[i].detach().float().numpy(), logits[i].detach().float().numpy(),
                                     gt.numpy(), alpha))
        targets[i, idx] = 1.0
        loc_terms.append(((loc[i, idx] - gt) ** 2).sum())
    loc_loss = torch.stack(loc_terms).sum() * (alpha / 2) if loc_terms else loc.sum() * 0
    conf_loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="sum")
    loss = (loc_loss + conf_loss) / b
    return loss, {"loc": float(loc_loss.detach()) / b, "conf": float(conf_loss.detach()) / b,
                  "matched": int(targets.sum())}
