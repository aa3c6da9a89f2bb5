"""Detection metrics: ILSVRC (devkit-exact), PASCAL VOC (2010+ area, 2007 11-point), COCO (pycocotools),
plus proposal recall (:mod:`.recall`). :func:`evaluate` is the one entry point the training and detection code
calls; the metric is chosen with a plain dict."""
from __future__ import annotations

from ..structures import Dataset, DatasetError, Detections
from .common import ClassResult, EvalResult

__all__ = ["evaluate", "EvalResult", "ClassResult", "METRICS"]

METRICS = ("voc", "voc07", "ilsvrc", "coco")


def _ilsvrc(dataset, detections, blacklist=None):
    from .ilsvrc import evaluate_submission, submission_from_detections

    return evaluate_submission(dataset, submission_from_detections(dataset, detections), blacklist)


def _voc(dataset, detections, use_07=False):
    from .voc import evaluate_voc

    return evaluate_voc(dataset, detections, use_07=use_07)


def _coco(dataset, detections):
    from .coco import evaluate_coco

    return evaluate_coco(dataset, detections)


_EVALUATORS = {
    "voc": lambda ds, d, **kw: _voc(ds, d),
    "voc07": lambda ds, d, **kw: _voc(ds, d, use_07=True),
    "ilsvrc": lambda ds, d, **kw: _ilsvrc(ds, d, kw.get("blacklist")),
    "coco": lambda ds, d, **kw: _coco(ds, d),
}


def evaluate(dataset: Dataset, detections: dict[str, Detections], metric: str, **kwargs) -> EvalResult:
    """Score ``detections`` (image_id -> :class:`Detections`, labels indexing ``dataset.classes``) against the
    dataset's ground truth. ``metric``: ``'voc'`` | ``'voc07'`` | ``'ilsvrc'`` | ``'coco'``; ``'ilsvrc'`` takes
    ``blacklist=set((image_index, det_id))``. Images without an entry have no detections."""
    if metric not in _EVALUATORS:
        raise DatasetError(f"unknown metric {metric!r} (choose from {', '.join(METRICS)})")
    return _EVALUATORS[metric](dataset, detections, **kwargs)
