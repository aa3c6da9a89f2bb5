"""COCO metrics through ``pycocotools.cocoeval.COCOeval`` (bbox).

``mAP`` is COCO's AP@[.5:.95] (``stats[0]``); the 12 standard numbers are in ``extra["stats"]``; per class
``ap`` is AP@[.5:.95] of that category and the curves are precision at IoU 0.5 over COCO's 101 recall points.
Ground truth is built from the :class:`Dataset` (library xyxy -> COCO xywh, ``ignore`` -> ``iscrowd``), so any
dataset can be scored with COCO's rules; with a COCO loader dataset the original ids are kept.
"""
from __future__ import annotations

import contextlib
import io

import numpy as np

from ..boxes import xyxy_to_xywh
from ..structures import Dataset, DatasetError, Detections
from .common import ClassResult, EvalResult

__all__ = ["evaluate_coco", "coco_ground_truth", "coco_results"]

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _ids(dataset: Dataset) -> tuple[dict[str, int], list[int]]:
    """COCO image ids per image_id (the numeric id itself for COCO datasets) and category ids per class."""
    try:
        img = {r.image_id: int(r.image_id) for r in dataset.records}
        if len(set(img.values())) != len(img):
            raise ValueError
    except ValueError:
        img = {r.image_id: i + 1 for i, r in enumerate(dataset.records)}
    try:
        cats = [int(c) for c in dataset.classes]
    except ValueError:
        cats = list(range(1, len(dataset.classes) + 1))
    return img, cats


def coco_ground_truth(dataset: Dataset) -> dict:
    """A COCO instances dict of the dataset's ground truth (``area`` = box area; crowd = ``ignore``)."""
    img_ids, cat_ids = _ids(dataset)
    images, anns = [], []
    for r in dataset.records:
        images.append({"id": img_ids[r.image_id], "width": r.width, "height": r.height, "file_name": r.image_id})
        for b, lab, ign in zip(xyxy_to_xywh(r.boxes), r.labels, r.ignore):
            anns.append({"id": len(anns) + 1, "image_id": img_ids[r.image_id], "category_id": cat_ids[lab],
                         "bbox": [float(x) for x in b], "area": float(b[2] * b[3]), "iscrowd": int(ign)})
    cats = [{"id": c, "name": n} for c, n in zip(cat_ids, dataset.class_names)]
    return {"images": images, "annotations": anns, "categories": cats}


def coco_results(dataset: Dataset, detections: dict[str, Detections]) -> list[dict]:
    """Standard COCO results list (``image_id, category_id, bbox [x, y, w, h], score``)."""
    img_ids, cat_ids = _ids(dataset)
    out = []
    for image_id, d in detections.items():
        if image_id not in img_ids:
            raise DatasetError(f"detections for image {image_id!r}, which is not in dataset {dataset.name}")
        for b, s, lab in zip(xyxy_to_xywh(d.boxes), d.scores, d.labels):
            out.append({"image_id": img_ids[image_id], "category_id": cat_ids[lab],
                        "bbox": [float(x) for x in b], "score": float(s)})
    return out


def evaluate_coco(dataset: Dataset, detections: dict[str, Detections] | None = None,
                  results: list[dict] | None = None) -> EvalResult:
    """COCO bbox evaluation of ``detections`` (or an already formed COCO ``results`` list)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO()
    gt.dataset = coco_ground_truth(dataset)
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        gt.createIndex()
    res = results if results is not None else coco_results(dataset, detections or {})
    img_ids, cat_ids = _ids(dataset)
    bad = [r for r in res if r.get("image_id") not in gt.imgs or r.get("category_id") not in cat_ids]
    if bad:
        raise DatasetError(f"{len(bad)} COCO result(s) name an unknown image or category, e.g. {bad[0]}")
    num_det = {c: 0 for c in cat_ids}
    for r in res:
        num_det[r["category_id"]] += 1
    num_gt = {c: 0 for c in cat_ids}
    for a in gt.dataset["annotations"]:
        num_gt[a["category_id"]] += 0 if a["iscrowd"] else 1
    if not res:
        stats = np.zeros(12)
        prec = None
    else:
        with contextlib.redirect_stdout(quiet):
            dt = gt.loadRes(res)
            ev = COCOeval(gt, dt, "bbox")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        stats = np.maximum(ev.stats, 0)
        prec = ev.eval["precision"]  # [T, R, K, A, M]
    per_class = []
    for k, (c, wnid, name) in enumerate(zip(cat_ids, dataset.classes, dataset.class_names)):
        if num_gt[c] == 0:
            ap, p50 = float("nan"), np.zeros(0)
        elif prec is None:
            ap, p50 = 0.0, np.zeros(0)
        else:
            p = prec[:, :, k, 0, -1]
            ap = float(np.mean(p[p > -1])) if (p > -1).any() else 0.0
            p50 = np.clip(prec[0, :, k, 0, -1], 0, None)
        per_class.append(ClassResult(c, wnid, name, ap, num_gt[c], num_det[c], p50,
                                     np.linspace(0, 1, 101)[: len(p50)]))
    return EvalResult("coco", float(stats[0]), per_class,
                      {"stats": {n: float(v) for n, v in zip(STAT_NAMES, stats)}})
