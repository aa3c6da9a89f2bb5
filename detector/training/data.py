"""Training inputs from a dataset: cached proposals (computed on demand) -> labelled region pools."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..config import ProposalConfig, TrainConfig
from ..structures import Dataset
from .sampling import RegionPool, label_regions

__all__ = ["split_proposals", "region_pools"]

log = logging.getLogger(__name__)


def split_proposals(dataset: Dataset, cfg: ProposalConfig, cache_dir: str | Path, workers: int = 1,
                    max_proposals: int = 0) -> list[np.ndarray]:
    """Proposals (float32 ``[N_i, 4]`` xyxy) of every record from the proposal cache, computing the missing
    ones with ``proposals.cache.compute_proposals``. ``max_proposals > 0`` keeps the first that many of
    each image's (deterministically ordered) boxes."""
    from proposals.cache import compute_proposals, load_proposals

    cache_dir = Path(cache_dir)
    out = [load_proposals(r, cfg, cache_dir) for r in dataset.records]
    missing = [r for r, p in zip(dataset.records, out) if p is None]
    if missing:
        log.info("computing proposals for %d of %d images into %s", len(missing), len(out), cache_dir)
        computed = compute_proposals(missing, cfg, cache_dir, workers=workers)
        out = [p if p is not None else computed[r.image_id] for r, p in zip(dataset.records, out)]
    if max_proposals > 0:
        out = [p[:max_proposals] for p in out]
    n = np.array([len(p) for p in out])
    log.info("proposals: %d images, %.0f per image (min %d, max %d)", len(out), n.mean() if len(n) else 0,
             n.min() if len(n) else 0, n.max() if len(n) else 0)
    return out


def region_pools(dataset: Dataset, proposals: list[np.ndarray], cfg: TrainConfig) -> list[RegionPool]:
    """Label ground truth + proposals of every image (sampling.label_regions with ``cfg``'s thresholds)."""
    pools = [label_regions(p, r.boxes, r.labels, r.ignore, cfg.fg_threshold, cfg.bg_threshold_high,
                           cfg.bg_threshold_low) for r, p in zip(dataset.records, proposals)]
    return pools
