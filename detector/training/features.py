"""Cached frozen-trunk features: fine-tuning the upper layers at a fraction of the CPU cost.

With ``train.freeze_below`` at ``inception_5a`` (or ``all``), every layer up to ``pool4`` is frozen and
has neither dropout nor batch statistics, so its output for a region is a fixed function of
``(image, box, mirrored?)``. Computing it once per region and training the upper layers from it is
exact -- the same arithmetic as running the frozen layers at every step (apart from the float16 storage,
a relative error of about 5e-4) -- and makes a training step cost only the trainable layers: on a CPU
the frozen trunk is ~85% of the network's work and, recomputed every step, decides the training time.

The price is a fixed region pool: R-CNN draws from ALL proposals of every image; here each image keeps
its ground-truth boxes, at most ``train.max_fg_per_image`` foreground and ``train.max_bg_per_image``
background proposals (a seeded, data-only choice, so every ensemble member shares the cache) and both
mirror images of each. A documented CPU-budget deviation (docs/sections/training.md), off by default
(``train.feature_layer: ""``).

The cache (``--feature-cache DIR``) holds one ``.npy`` file per image (float16 ``[M, F, C, h, w]``,
``F`` = 2 with mirroring) beside a ``key.json`` of everything the features depend on (weights sha256,
layer, warp, preprocessing, pool limits, the images); a different key rebuilds it, an interrupted build
continues, and a file whose shape or boxes disagree with its image's pool is recomputed.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..config import ConfigError, WarpConfig
from ..imageio import read_image
from ..structures import ImageRecord
from ..warp import PreprocessLike, prepare_image, warp_prepared
from .sampling import Minibatch, RegionPool

__all__ = ["restrict_pool", "restrict_pools", "check_feature_layer", "FeatureCache", "forward_from_features",
           "cache_dir_for"]

log = logging.getLogger(__name__)


def restrict_pool(pool: RegionPool, max_fg: int, max_bg: int, seed: int) -> RegionPool:
    """Keep every ground-truth box (``is_gt``), at most ``max_fg`` foreground and ``max_bg`` background
    proposals (0 = all), chosen uniformly with ``numpy.random.default_rng(seed)``; order preserved."""
    if max_fg < 0 or max_bg < 0:
        raise ValueError(f"max_fg_per_image / max_bg_per_image must be >= 0, got {max_fg}, {max_bg}")
    rng = np.random.default_rng(seed)
    gt = pool.gt_mask
    keep = gt.copy()
    for sel, cap in ((np.flatnonzero((pool.labels > 0) & ~gt), max_fg),
                     (np.flatnonzero((pool.labels == 0) & ~gt), max_bg)):
        keep[sel if cap == 0 or len(sel) <= cap else np.sort(rng.choice(sel, cap, replace=False))] = True
    return RegionPool(pool.boxes[keep], pool.labels[keep], pool.max_iou[keep], gt[keep])


def restrict_pools(pools: Sequence[RegionPool], max_fg: int, max_bg: int, seed: int = 0) -> list[RegionPool]:
    """:func:`restrict_pool` on every image (image ``i`` draws from ``default_rng([seed, i])``)."""
    out = [restrict_pool(p, max_fg, max_bg, [seed, i]) for i, p in enumerate(pools)]
    log.info("region pools restricted to <= %s fg / %s bg proposals per image: %d -> %d regions",
             max_fg or "all", max_bg or "all", sum(len(p.labels) for p in pools), sum(len(p.labels) for p in out))
    return out


def check_feature_layer(net: nn.Module, layer: str) -> None:
    """Refuse a cache layer at or above a trainable layer (its output would change during training)."""
    from ..googlenet import LAYER_NAMES

    if layer not in LAYER_NAMES:
        raise ConfigError(f"train.feature_layer: unknown layer {layer!r} (one of {', '.join(LAYER_NAMES)})")
    for name in LAYER_NAMES[:LAYER_NAMES.index(layer) + 1]:
        if any(p.requires_grad for p in getattr(net, name).parameters()):
            raise ConfigError(f"train.feature_layer={layer}: layer {name} is trainable (train.freeze_below "
                              f"must be above the cached layer, e.g. freeze_below=inception_5a with pool4)")


def forward_from_features(net: nn.Module, h: torch.Tensor, layer: str) -> torch.Tensor:
    """The classifier logits ``[B, K + 1]`` from cached ``layer`` features (aux heads are below: unused)."""
    f = net.forward_from(h, layer)
    return net.classifier(net.dropout(torch.flatten(net.avgpool(f), 1)))


def _digest(arrays: Sequence[np.ndarray]) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def cache_dir_for(root: str | Path, name: str, key: dict, records: Sequence[ImageRecord]) -> Path:
    """``root/<name>_<digest>``: one folder per feature key and image list, so that caches of different data
    sets (or pool limits, weights, ...) live side by side instead of rebuilding each other."""
    ids = np.frombuffer("\n".join(r.image_id for r in records).encode(), np.uint8)
    blob = np.frombuffer(json.dumps(key, sort_keys=True, default=str).encode(), np.uint8)
    return Path(root) / f"{name}_{_digest([blob, ids])[:12]}"


class FeatureCache:
    """Frozen-trunk features of every region of every pool (both mirror images when ``flips == 2``).

    ``feats[i]``: float16 ``[M_i, flips, C, h, w]`` for ``pools[i].boxes``; :meth:`load` turns a
    :class:`Minibatch` (with ``region_index``) into ``(features float32 [B, C, h, w], labels [B])``.
    """

    def __init__(self, feats: list[np.ndarray], layer: str) -> None:
        self.feats = feats
        self.layer = layer

    @property
    def nbytes(self) -> int:
        return int(sum(f.nbytes for f in self.feats))

    def load(self, batch: Minibatch) -> tuple[torch.Tensor, torch.Tensor]:
        if batch.region_index is None:
            raise ValueError("minibatch has no region_index (drawn by an old sampler?)")
        rows = [self.feats[i][j, int(f) if self.feats[i].shape[1] > 1 else 0]
                for i, j, f in zip(batch.image_index, batch.region_index, batch.flip)]
        x = torch.from_numpy(np.stack(rows).astype(np.float32)) if rows else torch.zeros(0)
        return x, torch.from_numpy(batch.labels)

    @classmethod
    @torch.inference_mode()
    def build(cls, records: Sequence[ImageRecord], pools: Sequence[RegionPool], net: nn.Module, layer: str,
              warp_cfg: WarpConfig, preprocess: PreprocessLike, flips: int = 2, cache_dir: str | Path | None = None,
              key: dict | None = None, batch_size: int = 64,
              progress: Callable[[int], None] | None = None) -> "FeatureCache":
        """Compute (or read from ``cache_dir``) the ``layer`` features of every pool region.

        ``key``: what else the features depend on (weights sha256, ...), stored with the cache;
        ``progress(n)`` is called with the number of region warps done (cached images count at once).
        """
        if flips not in (1, 2):
            raise ValueError(f"flips must be 1 or 2, got {flips}")
        net.eval()
        d = Path(cache_dir) if cache_dir is not None else None
        if d is not None:
            full_key = {**(key or {}), "layer": layer, "warp": vars(warp_cfg), "flips": flips,
                        "preprocess": repr(preprocess), "images": _digest([np.frombuffer(
                            "\n".join(r.image_id for r in records).encode(), np.uint8)])}
            d.mkdir(parents=True, exist_ok=True)
            kp = d / "key.json"
            if kp.is_file() and json.loads(kp.read_text()) != full_key:
                log.warning("feature cache %s was built for other inputs: rebuilding it", d)
                for f in d.glob("*.npy"):
                    f.unlink()
            kp.write_text(json.dumps(full_key, indent=1, sort_keys=True))
        feats: list[np.ndarray] = []
        todo = sum(len(p.labels) * flips for p in pools)
        log.info("frozen features at %s: %d images, %d region warps", layer, len(pools), todo)
        for i, (rec, pool) in enumerate(zip(records, pools)):
            path = d / f"{i:06d}_{_digest([pool.boxes])}.npy" if d is not None else None
            if path is not None and path.is_file():
                try:
                    f = np.load(path)
                    if f.shape[:2] == (len(pool.labels), flips):
                        feats.append(f)
                        if progress is not None:
                            progress(len(pool.labels) * flips)
                        continue
                except (OSError, ValueError) as e:
                    log.warning("%s: unreadable cached features (%s): recomputing", path, e)
            img = prepare_image(read_image(rec.image_path), preprocess)
            parts = []
            for flip in range(flips):
                for s in range(0, len(pool.boxes), batch_size):
                    x = warp_prepared(img, pool.boxes[s:s + batch_size], warp_cfg, flip=bool(flip))
                    parts.append((flip, net.forward_until(x, layer).to(torch.float16).numpy()))
                    if progress is not None:
                        progress(len(x))
            if parts:
                f = np.stack([np.concatenate([p for fl, p in parts if fl == flip]) for flip in range(flips)], 1)
            else:  # no regions (no proposals, no ground truth): never sampled
                f = np.zeros((0, flips, 0), np.float16)
            if path is not None:
                tmp = path.with_suffix(".tmp.npy")
                np.save(tmp, f)
                tmp.replace(path)
            feats.append(f)
        cache = cls(feats, layer)
        log.info("frozen features: %.1f MiB in memory", cache.nbytes / 2**20)
        return cache
