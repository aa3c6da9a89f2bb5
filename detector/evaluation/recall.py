"""Proposal coverage: recall at IoU >= 0.5 (optionally the ILSVRC small-object threshold), mean average best
overlap (MABO), boxes per image, and recall as a function of the number of proposals kept.

Ground truth with ``ignore=True`` (VOC difficult, COCO crowd) is excluded. Proposals are taken in the order the
proposer returns them (deterministic for ours), so "the first n" is well defined.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..boxes import iou_matrix, widths_heights
from ..structures import ImageRecord

__all__ = ["RecallReport", "best_overlaps", "ilsvrc_thresholds", "proposal_recall", "plot_recall_curves"]

DEFAULT_COUNTS = (1, 10, 50, 100, 200, 300, 500, 1000, 1500, 2000, 3000, 5000)


def ilsvrc_thresholds(gt: np.ndarray) -> np.ndarray:
    """Per-box ILSVRC threshold ``min(0.5, wh / ((w + 10)(h + 10)))``; our widths equal the devkit's +1 widths."""
    w, h = widths_heights(gt)
    return np.minimum(0.5, (w * h) / ((w + 10.0) * (h + 10.0)))


def best_overlaps(gt: np.ndarray, proposals: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """``[len(counts), G]``: best IoU of each GT box with the first ``n`` proposals, for each n in ``counts``."""
    ious = iou_matrix(proposals, gt)  # [P, G]
    if len(gt) == 0:
        return np.zeros((len(counts), 0))
    if len(proposals) == 0:
        return np.zeros((len(counts), len(gt)))
    running = np.maximum.accumulate(ious, axis=0)  # best over the first i+1 proposals
    idx = np.clip(np.asarray(counts) - 1, 0, len(proposals) - 1)
    out = running[idx]
    out[np.asarray(counts) <= 0] = 0
    return out


@dataclass
class RecallReport:
    num_images: int
    num_gt: int
    boxes_per_image: float
    recall: float  # at IoU >= threshold (or the ILSVRC per-object threshold)
    mabo: float  # mean over classes of the mean best overlap (Uijlings et al.)
    abo: float  # mean best overlap over all boxes
    counts: list[int] = field(default_factory=list)
    recall_at: list[float] = field(default_factory=list)  # recall with the first n proposals
    seconds_per_image: float | None = None
    threshold: str = "0.5"

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def proposal_recall(records: Sequence[ImageRecord], proposals: dict[str, np.ndarray], iou: float = 0.5,
                    ilsvrc_small: bool = False, counts: Sequence[int] = DEFAULT_COUNTS) -> RecallReport:
    """Coverage of ``proposals`` (``{image_id: [N, 4]}``) over the ground truth of ``records``."""
    max_n = max((len(proposals.get(r.image_id, ())) for r in records), default=0)
    counts = sorted({c for c in counts if c < max_n} | {max(max_n, 1)})
    all_best, all_thr, all_lab = [], [], []
    nboxes = []
    for r in records:
        boxes = proposals.get(r.image_id)
        if boxes is None:
            raise KeyError(f"no proposals for image {r.image_id}")
        nboxes.append(len(boxes))
        keep = ~r.ignore
        gt = r.boxes[keep]
        all_best.append(best_overlaps(gt, boxes, counts))
        all_thr.append(ilsvrc_thresholds(gt) if ilsvrc_small else np.full(len(gt), iou))
        all_lab.append(r.labels[keep])
    best = np.concatenate(all_best, axis=1) if all_best else np.zeros((len(counts), 0))
    thr = np.concatenate(all_thr) if all_thr else np.zeros(0)
    labels = np.concatenate(all_lab) if all_lab else np.zeros(0, int)
    g = best.shape[1]
    hits = best >= thr[None, :]
    recall_at = hits.mean(axis=1) if g else np.zeros(len(counts))
    final = best[-1] if g else np.zeros(0)
    per_class = [final[labels == c].mean() for c in np.unique(labels)]
    return RecallReport(
        num_images=len(records), num_gt=int(g), boxes_per_image=float(np.mean(nboxes)) if nboxes else 0.0,
        recall=float(recall_at[-1]) if g else 0.0, mabo=float(np.mean(per_class)) if per_class else 0.0,
        abo=float(final.mean()) if g else 0.0, counts=[int(c) for c in counts],
        recall_at=[float(x) for x in recall_at], threshold="ilsvrc" if ilsvrc_small else str(iou))


def plot_recall_curves(reports: dict[str, RecallReport], path: str, title: str = "") -> None:
    """PNG of recall vs number of proposals kept, one line per labelled report."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for label, rep in reports.items():
        ax.plot(rep.counts, rep.recall_at, marker="o", ms=3,
                label=f"{label} ({rep.boxes_per_image:.0f} boxes/img, R={rep.recall:.3f})")
    ax.set_xscale("log")
    ax.set_xlabel("number of proposals kept (per image)")
    ax.set_ylabel(f"recall (IoU >= {next(iter(reports.values())).threshold})" if reports else "recall")
    ax.set_ylim(0, 1.0)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
