"""R-CNN region sampling for fine-tuning: labelled region pools and fg/bg minibatches.

Labelling (R-CNN, ``rcnn_finetune`` window files): the candidate regions of an image are its ground-truth
boxes followed by its proposals. Each gets the best IoU with any (non-ignored) ground-truth box:

* foreground: IoU >= ``fg_threshold`` (0.5) -> label ``c + 1`` where ``c`` is that box's dataset class;
* background: ``bg_low <= IoU < bg_high`` (``[0, 0.5)``) -> label 0;
* anything else (only when ``bg_high < fg_threshold``) is not used.

Minibatches (Caffe ``WindowDataLayer`` as R-CNN ran it): ``batch_size`` (128) regions, of which
``round(fg_fraction * batch_size)`` (32) foreground and the rest background, each drawn uniformly (with
replacement) from the pool of ALL training images, so one batch mixes many images; each region is
mirrored with probability 1/2 when ``hflip``. The draw of iteration ``t`` is a pure function of
``(seed, t)`` (``numpy.random.default_rng([seed, t])``): resuming at iteration ``t`` needs no saved
generator, and ensemble members differ by ``seed``.

Boxes are float32 ``[N, 4]`` 0-based continuous xyxy (detector.boxes).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..boxes import as_boxes, iou_matrix, valid_mask

__all__ = ["RegionPool", "label_regions", "Minibatch", "RegionSampler"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class RegionPool:
    """Labelled candidate regions of one image.

    ``boxes`` float32 ``[M, 4]`` xyxy; ``labels`` int64 ``[M]`` (0 = background, ``c + 1`` = class
    ``c``, -1 = unused); ``max_iou`` float32 ``[M]`` (best IoU with the ground truth); ``is_gt`` bool
    ``[M]`` (the region is a ground-truth box; None: none is).
    """

    boxes: np.ndarray
    labels: np.ndarray
    max_iou: np.ndarray
    is_gt: np.ndarray | None = None

    @property
    def gt_mask(self) -> np.ndarray:
        return np.zeros(len(self.labels), bool) if self.is_gt is None else np.asarray(self.is_gt, bool)

    @property
    def fg_index(self) -> np.ndarray:
        return np.flatnonzero(self.labels > 0)

    @property
    def bg_index(self) -> np.ndarray:
        return np.flatnonzero(self.labels == 0)


def label_regions(proposals: np.ndarray, gt_boxes: np.ndarray, gt_labels: np.ndarray,
                  gt_ignore: np.ndarray | None = None, fg_threshold: float = 0.5, bg_high: float = 0.5,
                  bg_low: float = 0.0, include_gt: bool = True) -> RegionPool:
    """Label ground-truth boxes (if ``include_gt``) + ``proposals`` by their best IoU with ground truth.

    ``proposals`` / ``gt_boxes`` float32 ``[P, 4]`` / ``[G, 4]`` xyxy; ``gt_labels`` int ``[G]`` dataset
    classes (0-based); ``gt_ignore`` bool ``[G]``: those boxes (VOC difficult) are neither candidates nor
    matched. Zero-size proposals are dropped. With no ground truth every proposal with ``IoU = 0 >=
    bg_low`` is background. Returns a :class:`RegionPool` (ground truth first).
    """
    if not (0.0 <= bg_low <= bg_high <= fg_threshold <= 1.0):
        raise ValueError(f"need 0 <= bg_low <= bg_high <= fg_threshold <= 1, got bg_low={bg_low}, "
                         f"bg_high={bg_high}, fg_threshold={fg_threshold}")
    props = as_boxes(proposals)
    props = props[valid_mask(props)]
    gt = as_boxes(gt_boxes)
    gl = np.asarray(gt_labels, np.int64).reshape(-1)
    if len(gl) != len(gt):
        raise ValueError(f"{len(gl)} labels for {len(gt)} ground-truth boxes")
    keep = valid_mask(gt) if len(gt) else np.zeros(0, bool)
    if gt_ignore is not None:
        keep &= ~np.asarray(gt_ignore, bool).reshape(-1)
    gt, gl = gt[keep], gl[keep]
    cand = np.concatenate([gt, props]) if include_gt else props
    if len(gt) == 0 or len(cand) == 0:
        max_iou = np.zeros(len(cand), np.float32)
        labels = np.where(max_iou >= bg_low, 0, -1).astype(np.int64)
        return RegionPool(cand.astype(np.float32), labels, max_iou, np.zeros(len(cand), bool))
    iou = iou_matrix(cand, gt)  # [M, G]
    best = iou.argmax(axis=1)
    max_iou = iou[np.arange(len(cand)), best].astype(np.float32)
    labels = np.full(len(cand), -1, np.int64)
    labels[(max_iou >= bg_low) & (max_iou < bg_high)] = 0
    fg = max_iou >= fg_threshold
    labels[fg] = gl[best[fg]] + 1
    is_gt = np.arange(len(cand)) < (len(gt) if include_gt else 0)
    return RegionPool(cand.astype(np.float32), labels, max_iou, is_gt)


@dataclass(frozen=True, eq=False)
class Minibatch:
    """One sampled minibatch, sorted by image.

    ``image_index`` int64 ``[B]`` (index into the pools / records), ``boxes`` float32 ``[B, 4]`` xyxy,
    ``labels`` int64 ``[B]`` (0 = background), ``flip`` bool ``[B]``, ``photometric`` float32
    ``[n_images, 3]`` random numbers in [0, 1) per image of the batch (brightness, contrast, saturation;
    row ``i`` belongs to ``unique(image_index)[i]``), ``region_index`` int64 ``[B]`` (row of each region
    in its image's pool; what detector.training.features looks cached features up by).
    """

    image_index: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    flip: np.ndarray
    photometric: np.ndarray
    region_index: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)


class RegionSampler:
    """Draws R-CNN minibatches from the pools of all training images; deterministic in (seed, iteration)."""

    def __init__(self, pools: Sequence[RegionPool], batch_size: int = 128, fg_fraction: float = 0.25,
                 hflip: bool = True, seed: int = 0) -> None:
        if batch_size <= 0 or not 0.0 <= fg_fraction <= 1.0:
            raise ValueError(f"need batch_size > 0 and 0 <= fg_fraction <= 1, got {batch_size}, {fg_fraction}")
        self.pools = list(pools)
        self.batch_size = batch_size
        self.fg_fraction = fg_fraction
        self.hflip = hflip
        self.seed = int(seed)
        fg = [(i, j) for i, p in enumerate(self.pools) for j in p.fg_index]
        bg = [(i, j) for i, p in enumerate(self.pools) for j in p.bg_index]
        self._fg = np.asarray(fg, np.int64).reshape(-1, 2)
        self._bg = np.asarray(bg, np.int64).reshape(-1, 2)
        if len(self._fg) == 0 and len(self._bg) == 0:
            raise ValueError("no foreground or background regions to sample from (empty proposal sets "
                             "and no ground truth?)")
        log.info("region sampler: %d images, %d foreground and %d background regions, batches of %d "
                 "(%.0f%% fg), seed %d", len(self.pools), len(self._fg), len(self._bg), batch_size,
                 100 * fg_fraction, self.seed)

    @property
    def num_fg(self) -> int:
        return len(self._fg)

    @property
    def num_bg(self) -> int:
        return len(self._bg)

    def sample(self, iteration: int) -> Minibatch:
        """The minibatch of ``iteration`` (a pure function of ``(seed, iteration)``)."""
        rng = np.random.default_rng([self.seed, int(iteration)])
        n_fg = int(round(self.fg_fraction * self.batch_size))
        if len(self._fg) == 0:
            n_fg = 0
        elif len(self._bg) == 0:
            n_fg = self.batch_size
        n_bg = self.batch_size - n_fg
        pick = np.concatenate([self._fg[rng.integers(0, len(self._fg), n_fg)] if n_fg else
                               np.zeros((0, 2), np.int64),
                               self._bg[rng.integers(0, len(self._bg), n_bg)] if n_bg else
                               np.zeros((0, 2), np.int64)])
        flip = rng.random(len(pick)) < 0.5 if self.hflip else np.zeros(len(pick), bool)
        order = np.argsort(pick[:, 0], kind="stable")
        pick, flip = pick[order], flip[order]
        boxes = np.stack([self.pools[i].boxes[j] for i, j in pick]) if len(pick) else np.zeros((0, 4), np.float32)
        labels = np.array([self.pools[i].labels[j] for i, j in pick], np.int64)
        n_img = len(np.unique(pick[:, 0]))
        photometric = rng.random((n_img, 3)).astype(np.float32)
        return Minibatch(pick[:, 0].copy(), boxes.astype(np.float32), labels, flip, photometric, pick[:, 1].copy())

    def state_dict(self) -> dict:
        """All the sampler needs to reproduce its draws (they depend only on seed and iteration)."""
        return {"seed": self.seed, "batch_size": self.batch_size, "fg_fraction": self.fg_fraction,
                "hflip": self.hflip, "num_fg": self.num_fg, "num_bg": self.num_bg}

    def load_state_dict(self, state: dict) -> None:
        """Restore the seed; refuses a state drawn from a different region pool (other data/proposals)."""
        if (state.get("num_fg"), state.get("num_bg")) != (self.num_fg, self.num_bg):
            raise ValueError(f"sampler state was built on {state.get('num_fg')} fg / {state.get('num_bg')} bg "
                             f"regions, this data has {self.num_fg} / {self.num_bg} (different data or proposals)")
        self.seed = int(state["seed"])
