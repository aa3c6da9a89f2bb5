"""The one box convention of the library, and every conversion to and from file formats.

Inside the library a box array is ``float32 [N, 4]`` holding ``x1, y1, x2, y2`` in 0-based continuous
pixel coordinates: the left edge of the first pixel is 0, width = ``x2 - x1``; an empty set has shape
``(0, 4)``. File formats are converted only in the dataset loaders (read) and writers/evaluators (write):

* ILSVRC / PASCAL VOC XML and the ILSVRC submission format are 1-based *inclusive*:
  ``x1 = xmin - 1, x2 = xmax`` (:func:`from_one_based_inclusive`), inverse :func:`to_one_based_inclusive`.
  With this mapping the devkit's "+1" widths (``xmax - xmin + 1``) equal our ``x2 - x1``.
* COCO JSON and OpenCV Selective Search are ``x, y, w, h``: :func:`xywh_to_xyxy`, inverse
  :func:`xyxy_to_xywh`.

torch is imported inside the two NMS functions only: everything else here is numpy, and Selective Search
worker processes (which import this module through ``detector.structures``) then start in a fraction of a
second instead of the ~2-3 s that importing torch takes. The NMS itself is torchvision's compiled operator
(``torch.ops.torchvision.nms``), loaded from torchvision's extension library without importing the torchvision
package (:func:`_nms_op`). A :class:`~detector.pipeline.Detector` calls :func:`load_nms` when it is built.
"""
from __future__ import annotations

import functools
import logging

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "as_boxes", "empty_boxes", "areas", "widths_heights", "iou_matrix", "clip_boxes", "valid_mask",
    "nms", "batched_nms", "load_nms", "from_one_based_inclusive", "to_one_based_inclusive", "xywh_to_xyxy",
    "xyxy_to_xywh", "scale_boxes", "hflip_boxes",
]


def empty_boxes() -> np.ndarray:
    """An empty box array, shape ``(0, 4)`` float32."""
    return np.zeros((0, 4), dtype=np.float32)


def as_boxes(boxes) -> np.ndarray:
    """Return ``boxes`` as a contiguous float32 ``[N, 4]`` array; raise ``ValueError`` on another shape."""
    arr = np.asarray(boxes, dtype=np.float32)
    if arr.size == 0:
        return empty_boxes()
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"expected boxes of shape [N, 4], got {arr.shape}")
    return np.ascontiguousarray(arr)


def widths_heights(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Widths ``x2 - x1`` and heights ``y2 - y1`` of ``[N, 4]`` xyxy boxes, each ``[N]``."""
    b = as_boxes(boxes)
    return b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]


def areas(boxes: np.ndarray) -> np.ndarray:
    """Areas ``[N]`` of xyxy boxes (negative extents count as 0)."""
    w, h = widths_heights(boxes)
    return np.clip(w, 0, None) * np.clip(h, 0, None)


def valid_mask(boxes: np.ndarray, min_size: float = 0.0) -> np.ndarray:
    """Bool ``[N]``: finite boxes whose width and height are both ``> min_size``."""
    b = as_boxes(boxes)
    w, h = widths_heights(b)
    return np.isfinite(b).all(axis=1) & (w > min_size) & (h > min_size)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of ``a`` ``[N, 4]`` with every box of ``b`` ``[M, 4]``.

    Returns float64 ``[N, M]``; a pair whose union is 0 has IoU 0.
    """
    a = as_boxes(a).astype(np.float64)
    b = as_boxes(b).astype(np.float64)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = areas(a)[:, None].astype(np.float64) + areas(b)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(union > 0, inter / union, 0.0)
    return out


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Clip xyxy boxes to the image ``[0, width] x [0, height]``; returns a new ``[N, 4]`` array."""
    b = as_boxes(boxes).copy()
    b[:, 0::2] = np.clip(b[:, 0::2], 0, width)
    b[:, 1::2] = np.clip(b[:, 1::2], 0, height)
    return b


def scale_boxes(boxes: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Multiply x coordinates by ``sx`` and y coordinates by ``sy`` (image resize mapping)."""
    b = as_boxes(boxes).copy()
    b[:, 0::2] *= sx
    b[:, 1::2] *= sy
    return b


def hflip_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    """Boxes of the horizontally flipped image of width ``width``: ``x1' = W - x2, x2' = W - x1``."""
    b = as_boxes(boxes).copy()
    x1 = width - b[:, 2]
    x2 = width - b[:, 0]
    b[:, 0], b[:, 2] = x1, x2
    return b


@functools.cache
def _nms_op():
    """torchvision's compiled NMS operator, ``torch.ops.torchvision.nms``.

    Registered by loading torchvision's extension library (``_C*.so`` in its package folder, found without
    importing the package), as torchvision's own import does first: ``import torchvision.ops`` took 1.7-1.9 s
    per process on the 2-core machine, because it imports ``torch._dynamo``, and the library alone 1 ms. That
    import was on the critical path of every ``tools/detect.py`` command (README "Speed", session 23). When the
    library is not found or does not register the operator, the package is imported after all (a debug line
    says so)."""
    import importlib.util
    from pathlib import Path

    import torch

    if not hasattr(torch.ops.torchvision, "nms"):
        try:
            spec = importlib.util.find_spec("torchvision")
            folder = Path(spec.origin).parent if spec is not None and spec.origin else None
            libs = sorted(folder.glob("_C*.so")) + sorted(folder.glob("_C*.pyd")) if folder else []
            for lib in libs:
                torch.ops.load_library(str(lib))
                if hasattr(torch.ops.torchvision, "nms"):
                    break
        except (OSError, RuntimeError, ImportError) as e:
            log.debug("torchvision's extension library did not load directly: %s", e)
    if not hasattr(torch.ops.torchvision, "nms"):
        log.debug("torchvision's NMS operator not registered by its library: importing torchvision.ops")
        importlib.import_module("torchvision.ops")  # registers the operator
    return torch.ops.torchvision.nms


def load_nms() -> None:
    """Load the NMS operator now rather than on the first NMS call (1 ms; see :func:`_nms_op`)."""
    _nms_op()


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression by torchvision's operator (``torchvision.ops.nms``'s numbers).

    Returns the int64 indices of kept boxes in decreasing score order. A box is suppressed when its IoU
    with a kept higher-scoring box is ``> iou_threshold``.
    """
    import torch

    b = as_boxes(boxes)
    if len(b) == 0:
        return np.zeros((0,), dtype=np.int64)
    keep = _nms_op()(torch.from_numpy(b), torch.as_tensor(scores, dtype=torch.float32), float(iou_threshold))
    return keep.numpy().astype(np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                iou_threshold: float) -> np.ndarray:
    """Per-class NMS (boxes of different ``labels`` never suppress each other); kept indices, by score.

    The same indices as ``torchvision.ops.batched_nms`` (the tests compare them), computed the way it does on a
    CPU: up to 1,000 boxes, one NMS over boxes shifted apart per label (the shift, label x (largest coordinate
    + 1), is computed in float32 as there); beyond, one NMS per label and the kept boxes sorted by score."""
    import torch

    b = as_boxes(boxes)
    if len(b) == 0:
        return np.zeros((0,), dtype=np.int64)
    op = _nms_op()
    bt, st = torch.from_numpy(b), torch.as_tensor(scores, dtype=torch.float32)
    lt = torch.as_tensor(labels, dtype=torch.int64)
    thr = float(iou_threshold)
    if bt.numel() <= 4000:
        offsets = lt.to(bt) * (bt.max() + torch.tensor(1).to(bt))
        return op(bt + offsets[:, None], st, thr).numpy().astype(np.int64)
    kept = torch.zeros_like(st, dtype=torch.bool)
    for label in torch.unique(lt):
        idx = torch.where(lt == label)[0]
        kept[idx[op(bt[idx], st[idx], thr)]] = True
    keep = torch.where(kept)[0]
    return keep[st[keep].sort(descending=True)[1]].numpy().astype(np.int64)


def from_one_based_inclusive(boxes) -> np.ndarray:
    """ILSVRC/VOC ``xmin, ymin, xmax, ymax`` (1-based, inclusive) -> library xyxy.

    ``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax``. Inverse: :func:`to_one_based_inclusive`.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    b[:, 0] -= 1
    b[:, 1] -= 1
    return b.astype(np.float32)


def to_one_based_inclusive(boxes: np.ndarray) -> np.ndarray:
    """Library xyxy -> ILSVRC/VOC 1-based inclusive (float64). Inverse of :func:`from_one_based_inclusive`."""
    b = as_boxes(boxes).astype(np.float64).copy()
    b[:, 0] += 1
    b[:, 1] += 1
    return b


def xywh_to_xyxy(boxes) -> np.ndarray:
    """COCO / OpenCV ``x, y, w, h`` -> library xyxy. Inverse: :func:`xyxy_to_xywh`."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    b[:, 2] += b[:, 0]
    b[:, 3] += b[:, 1]
    return b


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """Library xyxy -> ``x, y, w, h``. Inverse of :func:`xywh_to_xyxy`."""
    b = as_boxes(boxes).copy()
    b[:, 2] -= b[:, 0]
    b[:, 3] -= b[:, 1]
    return b
