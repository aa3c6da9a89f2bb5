"""Selective Search proposals as R-CNN ran them, with the GoogLeNet entry's 2x superpixels.

Built on OpenCV contrib's ``cv2.ximgproc.segmentation`` with the hierarchies set up explicitly (never
``switchToSelectiveSearchFast()``, which uses k = 150/300/450 and min size 100, a different configuration):

* ``fast`` (R-CNN): colour spaces HSV and Lab x strategies {colour+texture+size+fill, texture+size+fill} x
  Felzenszwalb k in {50, 100}, min size = k, sigma 0.8 (8 hierarchies);
* ``quality`` (Uijlings et al.): HSV, Lab, rgI, H, I x {C+T+S+F, T+S+F, F, S} x k in {50, 100, 150, 300};
* ``single``: HSV, colour+texture+size+fill, k = 100;
* ``opencv_fast``: OpenCV's own ``switchToSelectiveSearchFast()`` (for comparison only).

``superpixel_scale`` multiplies every k and min size (the paper: 2 -> k {100, 200}). The image is resized to
``resize_width`` (R-CNN: 500) and boxes are mapped back to the original image; boxes narrower or shorter than
``min_box_size`` at that width are dropped; duplicates removed.

Determinism: OpenCV ranks boxes by hierarchy level times C ``rand()``; we seed libc's ``rand`` (``srand(0)``)
right before ``process()``, so the same image and config give the same boxes in the same (OpenCV-ranked)
order in any process and on any call; duplicates keep their first (best-ranked) occurrence. That stream is
process-wide: another thread calling ``rand()`` during ``process()`` takes a value from it and reorders the
boxes (the set of boxes stays the same). ONNX Runtime's telemetry thread does so every 5-9 s; importing
``detector`` stops ONNX Runtime from starting it (``detector/__init__.py``), and when onnxruntime was
imported before us with telemetry on, the first Selective Search call warns once.
"""
from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys

import cv2
import numpy as np

import detector
from detector.boxes import empty_boxes, scale_boxes, xywh_to_xyxy
from detector.config import SS_MODES as MODES, SelectiveSearchConfig

__all__ = ["MODES", "SelectiveSearchError", "selective_search", "hierarchy_spec"]

log = logging.getLogger(__name__)

_seg = cv2.ximgproc.segmentation
# Our deviation from R-CNN (which resized every image to width 500 whatever its height): the working image's
# longer side is capped, so a tall thin strip cannot become a 500x15000 image. Normal photos never reach it.
MAX_SIDE = 2000
try:
    _libc = ctypes.CDLL(None)
except OSError:  # pragma: no cover - non-glibc platforms
    _libc = None


class SelectiveSearchError(RuntimeError):
    """OpenCV failed on an image (the message names it)."""


def _colour_spaces(names: tuple[str, ...], bgr: np.ndarray) -> list[np.ndarray]:
    out = []
    for n in names:
        if n == "HSV":
            out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV))
        elif n == "Lab":
            out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2Lab))
        elif n == "I":
            out.append(cv2.cvtColor(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR))
        elif n == "H":
            h = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)[:, :, 0]
            out.append(cv2.merge([h, h, h]))
        elif n == "rgI":
            f = bgr.astype(np.float32)
            s = f.sum(axis=2) + 1e-6
            r, g = f[:, :, 2] / s * 255, f[:, :, 1] / s * 255
            i = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float32)
            out.append(np.clip(np.dstack([r, g, i]), 0, 255).astype(np.uint8))
        else:  # pragma: no cover - spec is internal
            raise ValueError(n)
    return out


def hierarchy_spec(cfg: SelectiveSearchConfig) -> tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...]]:
    """(colour spaces, strategies, k values) for ``cfg.mode``, k already multiplied by ``superpixel_scale``.

    Strategies are strings of C (colour), T (texture), S (size), F (fill)."""
    if cfg.mode == "fast":
        spaces, strategies, ks = ("HSV", "Lab"), ("CTSF", "TSF"), (50, 100)
    elif cfg.mode == "quality":
        spaces, strategies, ks = ("HSV", "Lab", "rgI", "H", "I"), ("CTSF", "TSF", "F", "S"), (50, 100, 150, 300)
    elif cfg.mode == "single":
        spaces, strategies, ks = ("HSV",), ("CTSF",), (100,)
    else:
        raise ValueError(f"selective_search.mode must be one of {MODES}, got {cfg.mode!r}")
    if not cfg.superpixel_scale > 0:
        raise ValueError(f"selective_search.superpixel_scale must be > 0, got {cfg.superpixel_scale}")
    return spaces, strategies, tuple(int(round(k * cfg.superpixel_scale)) for k in ks)


def _strategy(letters: str):
    parts = {"C": _seg.createSelectiveSearchSegmentationStrategyColor,
             "T": _seg.createSelectiveSearchSegmentationStrategyTexture,
             "S": _seg.createSelectiveSearchSegmentationStrategySize,
             "F": _seg.createSelectiveSearchSegmentationStrategyFill}
    made = [parts[c]() for c in letters]
    return made[0] if len(made) == 1 else _seg.createSelectiveSearchSegmentationStrategyMultiple(*made)


def _run_opencv(bgr: np.ndarray, cfg: SelectiveSearchConfig) -> np.ndarray:
    ss = _seg.createSelectiveSearchSegmentation()
    if cfg.mode == "opencv_fast":
        ss.setBaseImage(bgr)
        ss.switchToSelectiveSearchFast()
    else:
        spaces, strategies, ks = hierarchy_spec(cfg)
        ss.clearImages()
        ss.clearGraphSegmentations()
        ss.clearStrategies()
        for im in _colour_spaces(spaces, bgr):
            ss.addImage(im)
        for k in ks:
            ss.addGraphSegmentation(_seg.createGraphSegmentation(cfg.sigma, float(k), int(k)))
        for s in strategies:
            ss.addStrategy(_strategy(s))
    if _libc is not None:
        if _ort_shares_rand():
            _warn_rand_shared()
        _libc.srand(0)  # OpenCV's ranking multiplies levels by rand(): seed it for a reproducible order
    rects = ss.process()
    return np.asarray(rects, dtype=np.float32).reshape(-1, 4)


def _ort_shares_rand() -> bool:
    """True when ONNX Runtime is loaded with its telemetry thread (which calls ``rand()``) likely running."""
    return "onnxruntime" in sys.modules and (
        detector.ORT_IMPORTED_FIRST or os.environ.get("ORT_DISABLE_TELEMETRY") != "1")


@functools.lru_cache(maxsize=1)
def _warn_rand_shared() -> None:
    log.warning("onnxruntime was imported with its telemetry on (before `detector`, or with "
                "ORT_DISABLE_TELEMETRY unset): its thread calls rand(), so Selective Search may return the same "
                "boxes in a different order from run to run; set ORT_DISABLE_TELEMETRY=1 before importing it")


def _unique_first(boxes: np.ndarray) -> np.ndarray:
    if len(boxes) == 0:
        return boxes
    _, first = np.unique(boxes, axis=0, return_index=True)
    return boxes[np.sort(first)]


def selective_search(image: np.ndarray, cfg: SelectiveSearchConfig, name: str = "<image>") -> np.ndarray:
    """Class-agnostic proposals for ``image`` (RGB uint8 ``[H, W, 3]``).

    Returns float32 ``[N, 4]`` xyxy in the original image's coordinates, in a deterministic order. An image
    smaller than ``min_box_size`` in either side at the working width yields no boxes (logged). When OpenCV
    fails: :class:`SelectiveSearchError` naming ``name``, or with ``cfg.fallback_whole_image`` the whole-image
    box and a warning.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"{name}: expected an RGB uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
    if cfg.mode not in MODES:
        raise ValueError(f"selective_search.mode must be one of {MODES}, got {cfg.mode!r}")
    h, w = image.shape[:2]
    scale = cfg.resize_width / w if cfg.resize_width > 0 else 1.0
    if max(w, h) * scale > MAX_SIDE:  # e.g. a 30x900 strip would become 500x15000 at width 500
        scale = MAX_SIDE / max(w, h)
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    if nw < cfg.min_box_size or nh < cfg.min_box_size:
        log.warning("%s: %dx%d at working width %d is smaller than min_box_size %d: no proposals",
                    name, w, h, nw, cfg.min_box_size)
        return empty_boxes()
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if (nw, nh) != (w, h):
        bgr = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    try:
        rects = _run_opencv(bgr, cfg)
    except cv2.error as e:
        if cfg.fallback_whole_image:
            log.warning("%s: Selective Search failed (%s); using the whole image as the only proposal",
                        name, str(e).strip().splitlines()[-1])
            return np.array([[0, 0, w, h]], np.float32)
        raise SelectiveSearchError(f"{name}: OpenCV Selective Search failed: {e}") from None
    keep = (rects[:, 2] >= cfg.min_box_size) & (rects[:, 3] >= cfg.min_box_size)  # R-CNN: drop < 20 px
    boxes = _unique_first(xywh_to_xyxy(rects[keep]))  # OpenCV x, y, w, h -> xyxy (the one boundary)
    boxes = scale_boxes(boxes, w / nw, h / nh)
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, w)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, h)
    return _unique_first(boxes)
