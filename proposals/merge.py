"""Selective Search boxes plus the top-k MultiBox boxes (the GoogLeNet entry: k = 200), de-duplicated, in a
deterministic order: MultiBox boxes first (by decreasing objectness, after NMS), then Selective Search boxes in
their own deterministic order; a box identical to an earlier one is dropped.

The MultiBox model is loaded once per checkpoint path and process (a small LRU cache keyed by the path).
"""
from __future__ import annotations

import functools
import logging

import numpy as np

from detector.boxes import as_boxes
from detector.config import ProposalConfig

from .cache import check_multibox_checkpoint

__all__ = ["merge_proposals", "propose_with_multibox", "load_multibox"]

log = logging.getLogger(__name__)


def merge_proposals(ss_boxes: np.ndarray, mb_boxes: np.ndarray) -> np.ndarray:
    """``mb_boxes`` (already NMS'd, top-k, by score) then ``ss_boxes``, exact duplicates removed."""
    both = np.concatenate([as_boxes(mb_boxes), as_boxes(ss_boxes)])
    if len(both) == 0:
        return both
    _, first = np.unique(both, axis=0, return_index=True)
    return both[np.sort(first)]


@functools.lru_cache(maxsize=4)
def load_multibox(path: str):
    """The trained MultiBox network of a checkpoint written by ``tools/train_multibox.py``."""
    from .multibox.train import load_model
    return load_model(path)


def propose_with_multibox(image: np.ndarray, cfg: ProposalConfig, name: str = "<image>") -> np.ndarray:
    """Proposals for ``cfg.method`` "multibox" (top-k MultiBox only) or "ss+multibox" (the union)."""
    check_multibox_checkpoint(cfg)
    mb = cfg.multibox
    model = load_multibox(str(mb.checkpoint))
    boxes, _ = model.predict(image, mb.top_k, mb.nms_threshold)
    if cfg.method == "multibox":
        return boxes
    from .selective_search import selective_search
    return merge_proposals(selective_search(image, cfg.selective_search, name), boxes)
