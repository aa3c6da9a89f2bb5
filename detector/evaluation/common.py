"""What every detection metric shares: the result type, the VOC/ILSVRC area AP, the 11-point AP, and the
grouping of detections by (image, class) used by the vectorised matchers.

Conventions: ``precision``/``recall`` curves are float64 ``[D]`` over a class's detections sorted by
descending confidence (ties keep input order, like MATLAB's stable ``sort(..., 'descend')``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

__all__ = ["ClassResult", "EvalResult", "area_ap", "voc07_ap", "pr_curve", "stable_desc"]

log = logging.getLogger(__name__)


@dataclass
class ClassResult:
    """One class: ``id`` is the 1-based class id (ILSVRC DET_ID; else label + 1), ``wnid`` the class identifier
    of the dataset (WNID, VOC name, COCO category id), ``ap`` NaN when the class has no ground truth."""

    id: int
    wnid: str
    name: str
    ap: float
    num_gt: int
    num_det: int
    precision: np.ndarray = field(default_factory=lambda: np.zeros(0))
    recall: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def to_dict(self, curves: bool = False) -> dict:
        """Plain numbers (``ap`` may be NaN; :func:`detector.evaluation.report.write_json` writes it as null)."""
        d = {"id": self.id, "wnid": self.wnid, "name": self.name,
             "ap": float(self.ap), "num_gt": self.num_gt, "num_det": self.num_det}
        if curves:
            d["precision"] = [float(x) for x in self.precision]
            d["recall"] = [float(x) for x in self.recall]
        return d


@dataclass
class EvalResult:
    """``mAP``: mean AP over the classes that have ground truth (classes without any are reported with
    ``ap`` NaN / JSON null and left out of the mean, with a warning; the devkit would return NaN)."""

    metric: str
    mAP: float
    per_class: list[ClassResult]
    extra: dict = field(default_factory=dict)

    def to_dict(self, curves: bool = False) -> dict:
        return {"metric": self.metric, "mAP": float(self.mAP),
                "per_class": [c.to_dict(curves) for c in self.per_class], **self.extra}


def mean_ap(per_class: list[ClassResult]) -> float:
    """Mean of the APs of the classes with ground truth; logs the classes left out."""
    empty = [c.name for c in per_class if c.num_gt == 0]
    if empty:
        log.warning("%d class(es) without ground truth left out of the mean: %s", len(empty),
                    ", ".join(empty[:10]) + (" ..." if len(empty) > 10 else ""))
    aps = [c.ap for c in per_class if c.num_gt > 0]
    return float(np.mean(aps)) if aps else float("nan")


def stable_desc(scores: np.ndarray) -> np.ndarray:
    """Indices sorting ``scores`` descending, equal scores in input order (MATLAB ``sort(x,'descend')``)."""
    return np.argsort(-np.asarray(scores, np.float64), kind="stable")


def pr_curve(tp: np.ndarray, fp: np.ndarray, num_gt: int) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall ``[D]`` from per-detection 0/1 ``tp``/``fp`` already in confidence order.

    As the devkits: ``recall = cumsum(tp) / num_gt``, ``precision = cumsum(tp) / (cumsum(tp) + cumsum(fp))``.
    With ``num_gt == 0`` the recall is NaN (as MATLAB's 0/0).
    """
    tp = np.cumsum(np.asarray(tp, np.float64))
    fp = np.cumsum(np.asarray(fp, np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = tp / num_gt if num_gt > 0 else np.full_like(tp, np.nan)
        precision = tp / (tp + fp)
    return precision, recall


def area_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC 2010+ / ILSVRC ``VOCap``: area under the monotone precision envelope.

    Literally: ``mrec = [0; rec; 1]``, ``mpre = [0; prec; 0]``, ``mpre(i) = max(mpre(i), mpre(i+1))`` from the
    end (MATLAB's ``max`` ignores NaN, hence ``fmax``), then ``sum((mrec(i) - mrec(i-1)) * mpre(i))`` over the
    points where the recall changes.
    """
    mrec = np.concatenate([[0.0], np.asarray(recall, np.float64), [1.0]])
    mpre = np.concatenate([[0.0], np.asarray(precision, np.float64), [0.0]])
    mpre = np.fmax.accumulate(mpre[::-1])[::-1]
    i = np.nonzero(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


def voc07_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC 2007 11-point AP: mean over ``t = 0, 0.1, ..., 1`` of ``max(precision[recall >= t])`` (0 if none)."""
    recall = np.asarray(recall, np.float64)
    precision = np.asarray(precision, np.float64)
    ap = 0.0
    for t in np.arange(0.0, 1.1, 0.1):
        sel = recall >= t
        ap += (np.nanmax(precision[sel]) if sel.any() else 0.0) / 11.0
    return float(ap)


def group_bounds(keys: np.ndarray) -> list[tuple[int, int]]:
    """``[(start, stop)]`` of runs of equal values in the sorted 1-D ``keys``."""
    if len(keys) == 0:
        return []
    cut = np.nonzero(keys[1:] != keys[:-1])[0] + 1
    starts = np.concatenate([[0], cut])
    stops = np.concatenate([cut, [len(keys)]])
    return list(zip(starts.tolist(), stops.tolist()))
