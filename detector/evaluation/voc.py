"""PASCAL VOC AP (``VOCevaldet`` semantics): per class, detections sorted by descending confidence; each is
matched to the ground truth of its image and class with the highest IoU; IoU >= 0.5 and that object not yet
detected -> true positive, already detected -> false positive (duplicate), IoU < 0.5 -> false positive; if the
best object is ``difficult`` (``ignore``) the detection counts as neither. Difficult objects are not counted
in ``num_gt``. AP: ``'voc'`` = 2010+ area under the precision envelope, ``'voc07'`` = 11-point.

IoU is computed on library boxes (continuous, width ``x2 - x1``), which equals the devkit's ``+1``-width IoU on
the 1-based inclusive file coordinates.
"""
from __future__ import annotations

import numpy as np

from ..boxes import iou_matrix
from ..structures import Dataset, DatasetError, Detections
from .common import ClassResult, EvalResult, area_ap, mean_ap, pr_curve, stable_desc, voc07_ap

__all__ = ["evaluate_voc", "match_voc"]


def match_voc(det_boxes: np.ndarray, gt_boxes: np.ndarray, gt_ignore: np.ndarray,
              iou_threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """One image, one class: detections (xyxy, descending confidence) vs ground truth. Returns bool ``tp``,
    ``fp`` ``[D]`` (both False for a detection of a difficult object)."""
    D = len(det_boxes)
    if len(gt_boxes) == 0:
        return np.zeros(D, bool), np.ones(D, bool)
    ov = iou_matrix(det_boxes, gt_boxes)
    best = np.argmax(ov, axis=1)
    ovmax = ov[np.arange(D), best]
    tp = np.zeros(D, bool)
    fp = np.zeros(D, bool)
    detected = np.zeros(len(gt_boxes), bool)
    for j in range(D):
        k = best[j]
        if ovmax[j] >= iou_threshold:
            if gt_ignore[k]:
                continue
            if not detected[k]:
                tp[j] = detected[k] = True
            else:
                fp[j] = True
        else:
            fp[j] = True
    return tp, fp


def evaluate_voc(dataset: Dataset, detections: dict[str, Detections], use_07: bool = False,
                 iou_threshold: float = 0.5) -> EvalResult:
    """VOC AP per class of ``dataset.classes``; ``detections``: image_id -> Detections (labels index classes).
    Detections of images not in the dataset raise (they would otherwise be silently ignored)."""
    K = len(dataset.classes)
    unknown = set(detections) - {r.image_id for r in dataset.records}
    if unknown:
        raise DatasetError(f"detections for {len(unknown)} image(s) not in dataset {dataset.name}, "
                           f"e.g. {sorted(unknown)[:3]}")
    confs = [[] for _ in range(K)]
    tps = [[] for _ in range(K)]
    fps = [[] for _ in range(K)]
    num_gt = np.zeros(K, np.int64)
    for r in dataset.records:
        np.add.at(num_gt, r.labels[~r.ignore], 1)
        d = detections.get(r.image_id)
        if d is None or len(d) == 0:
            continue
        if d.labels.min() < 0 or d.labels.max() >= K:
            raise DatasetError(f"detections for {r.image_id}: labels outside 0..{K - 1}")
        for c in np.unique(d.labels):
            m = np.nonzero(d.labels == c)[0]
            m = m[stable_desc(d.scores[m])]
            g = r.labels == c
            tp, fp = match_voc(d.boxes[m], r.boxes[g], r.ignore[g], iou_threshold)
            confs[c].append(d.scores[m].astype(np.float64))
            tps[c].append(tp)
            fps[c].append(fp)
    per_class = []
    for c in range(K):
        conf = np.concatenate(confs[c]) if confs[c] else np.zeros(0)
        tp = np.concatenate(tps[c]) if tps[c] else np.zeros(0, bool)
        fp = np.concatenate(fps[c]) if fps[c] else np.zeros(0, bool)
        o = stable_desc(conf)
        counted = (tp | fp)[o]  # detections of difficult objects are left out of the curve, as in VOCevaldet
        prec, rec = pr_curve(tp[o][counted], fp[o][counted], int(num_gt[c]))
        if num_gt[c] == 0:
            ap = float("nan")
        else:
            ap = voc07_ap(rec, prec) if use_07 else area_ap(rec, prec)
        per_class.append(ClassResult(c + 1, dataset.classes[c], dataset.class_names[c], ap, int(num_gt[c]),
                                     int(len(conf)), prec, rec))
    return EvalResult("voc07" if use_07 else "voc", mean_ap(per_class), per_class,
                      {"num_images": len(dataset), "iou_threshold": iou_threshold})
