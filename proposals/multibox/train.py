"""Training the MultiBox network from the BVLC ImageNet weights, affordably on a CPU.

The trunk below ``freeze_below`` is frozen, so its output for every training image (and its horizontal
flip) is computed once and cached in the run directory (fp16, keyed by the weights sha256, the layer and the
image identity); training then runs only the upper layers and the heads. Checkpoints (written atomically)
hold the trainable weights, priors, optimizer, scheduler, iteration, RNG states, the resolved config and the
feature-cache key; ``resume`` continues from the last one and, with the same seed, reaches the same weights as an
uninterrupted run (the batch order is a pure function of (seed, iteration)).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from detector.boxes import hflip_boxes
from detector.config import MultiBoxTrainConfig, config_to_dict
from detector.googlenet import LAYER_NAMES
from detector.imageio import read_image
from detector.structures import ImageRecord
from detector.training.checkpoint import save_atomic
from detector.weights import load_bvlc_weights, sha256_file

from .loss import multibox_loss
from .model import MultiBoxNet, from_image, image_tensor
from .priors import kmeans_priors, normalised_boxes

__all__ = ["FORMAT", "MultiBoxCheckpointError", "cache_features", "train_multibox", "load_model", "History"]

log = logging.getLogger(__name__)
FORMAT = "googlenet-rcnn-multibox"
FORMAT_VERSION = 1


class MultiBoxCheckpointError(ValueError):
    """A MultiBox checkpoint that is unreadable or does not match the run."""


def _cache_layer(freeze_below: str) -> str:
    """The trunk layer whose output is cached: the one before ``freeze_below`` ("head": trunk frozen, the
    features are taken after pool4 and run once through 5a/5b in memory)."""
    if freeze_below == "head":
        return "pool4"
    if freeze_below not in LAYER_NAMES:
        raise ValueError(f"multibox_train.freeze_below must be 'head' or a trunk layer ({', '.join(LAYER_NAMES)}); "
                         f"got {freeze_below!r}")
    i = LAYER_NAMES.index(freeze_below)
    if i == 0:
        raise ValueError("multibox_train.freeze_below=conv1 would train the whole trunk: not supported on CPU")
    return LAYER_NAMES[i - 1]


def cache_features(records: Sequence[ImageRecord], net: MultiBoxNet, layer: str, cache_dir: Path,
                   weights_sha: str, hflip: bool, progress: Callable | None = None) -> dict[str, np.ndarray]:
    """Frozen trunk outputs up to ``layer`` for every record (+ flipped view): ``{key: fp16 [C, h, w]}``,
    keys ``<image_id>`` and ``<image_id>|flip``. Stored per image in ``cache_dir`` with their key."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    net.eval()
    for r in records:
        st = Path(r.image_path).stat()
        key = json.dumps({"w": weights_sha, "layer": layer, "path": str(Path(r.image_path).resolve()),
                          "size": st.st_size, "mtime": st.st_mtime_ns, "flip": hflip})
        f = cache_dir / (hashlib.sha1(r.image_id.encode()).hexdigest()[:16] + ".npz")
        feats = None
        if f.is_file():
            with np.load(f, allow_pickle=False) as z:
                if str(z["key"]) == key:
                    feats = {k: z[k] for k in ("plain", "flip") if k in z.files}
        if feats is None:
            img = read_image(r.image_path)
            views = {"plain": image_tensor(img)}
            if hflip:
                views["flip"] = image_tensor(img, flip=True)
            with torch.inference_mode():
                feats = {k: net.trunk.forward_until(v, layer)[0].half().numpy() for k, v in views.items()}
            tmp = f.with_name(f.name + ".tmp.npz")
            np.savez(tmp, key=np.array(key), **feats)
            os.replace(tmp, f)
        out[r.image_id] = feats["plain"]
        if "flip" in feats:
            out[r.image_id + "|flip"] = feats["flip"]
        if progress:
            progress(1)
    return out


@dataclass
class History:
    iterations: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    loc: list[float] = field(default_factory=list)
    conf: list[float] = field(default_factory=list)


def _targets(records: Sequence[ImageRecord]) -> dict[str, torch.Tensor]:
    out = {}
    for r in records:
        b = r.boxes[~r.ignore]
        out[r.image_id] = torch.from_numpy(from_image(b, r.width, r.height))
        out[r.image_id + "|flip"] = torch.from_numpy(from_image(hflip_boxes(b, r.width), r.width, r.height))
    return out


def _batch(keys: list[str], seed: int, it: int, bs: int) -> list[str]:
    """The keys of step ``it``: a pure function of (seed, iteration) so a resumed run sees the same batches."""
    g = np.random.default_rng([seed, it])
    return [keys[i] for i in g.choice(len(keys), size=min(bs, len(keys)), replace=False)]


def train_multibox(records: Sequence[ImageRecord], cfg: MultiBoxTrainConfig, weights: Path, out_dir: Path,
                   resume: bool = False, progress: Callable | None = None) -> tuple[Path, History]:
    """Train MultiBox on ``records``; returns the final checkpoint path and the loss history."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / "last.pt"
    torch.manual_seed(cfg.seed)
    layer = _cache_layer(cfg.freeze_below)
    state = None
    if resume and ckpt_path.is_file():
        state = _read(ckpt_path)
        if state["config"] != config_to_dict(cfg):
            raise MultiBoxCheckpointError(f"{ckpt_path}: written with a different config "
                                          f"{state['config']}; refusing to resume with {config_to_dict(cfg)}")
        priors = state["priors"]
    else:
        priors = kmeans_priors(normalised_boxes(records), cfg.num_priors, cfg.seed, cfg.kmeans_iterations)
    net = MultiBoxNet(priors)
    sha = load_bvlc_weights(net.trunk, weights)
    head_only = cfg.freeze_below == "head"
    if head_only:
        for p in net.trunk.parameters():
            p.requires_grad_(False)
    else:
        net.trunk.freeze_below(cfg.freeze_below)
    feats = cache_features(records, net, layer, out_dir / "features", sha, cfg.hflip, progress=None)
    if head_only:  # run the frozen 5a/5b once over the cache instead of at every step
        with torch.inference_mode():
            feats = {k: net.trunk.forward_from(torch.from_numpy(v[None].astype(np.float32)), layer)[0]
                     .half().numpy() for k, v in feats.items()}
    targets = _targets(records)
    keys = sorted(feats)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.base_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, cfg.lr_step, cfg.lr_gamma)
    hist = History()
    start = 0
    if state is not None:
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        hist = History(**state["history"])
        start = state["iteration"]
        log.info("resumed %s at iteration %d", ckpt_path, start)
    net.train()
    net.trunk.eval()  # frozen layers behave as at test time (no dropout in the trunk anyway)
    t0 = time.perf_counter()
    for it in range(start, cfg.iterations):
        batch = _batch(keys, cfg.seed, it, cfg.batch_size)
        x = torch.from_numpy(np.stack([feats[k] for k in batch]).astype(np.float32))
        boxes, logits = net._heads(x) if head_only else net.forward_from(x, layer)
        loss, parts = multibox_loss(boxes, logits, [targets[k] for k in batch], cfg.alpha)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        hist.iterations.append(it + 1)
        hist.loss.append(float(loss))
        hist.loc.append(parts["loc"])
        hist.conf.append(parts["conf"])
        if progress:
            progress(it + 1, float(loss), (it + 1 - start) * len(batch) / (time.perf_counter() - t0))
        if (it + 1) % cfg.checkpoint_every == 0 or it + 1 == cfg.iterations:
            _write(ckpt_path, net, opt, sched, it + 1, cfg, sha, hist)
    if start >= cfg.iterations and not ckpt_path.is_file():
        _write(ckpt_path, net, opt, sched, start, cfg, sha, hist)
    return ckpt_path, hist


def _write(path: Path, net, opt, sched, it: int, cfg: MultiBoxTrainConfig, sha: str, hist: History) -> None:
    save_atomic({"format": FORMAT, "format_version": FORMAT_VERSION, "model": net.state_dict(),
                 "priors": net.priors.numpy(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                 "torch_rng": torch.get_rng_state(), "iteration": it, "config": config_to_dict(cfg),
                 "weights_sha256": sha, "history": hist.__dict__}, path)


def _read(path: Path) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad user file
        raise MultiBoxCheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise MultiBoxCheckpointError(f"{path}: not a MultiBox checkpoint (expected format {FORMAT!r})")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise MultiBoxCheckpointError(f"{path}: format version {ckpt.get('format_version')}, expected "
                                      f"{FORMAT_VERSION}")
    return ckpt


def load_model(path: str | Path) -> MultiBoxNet:
    """The trained network of a MultiBox checkpoint, in eval mode, loaded strictly."""
    ckpt = _read(Path(path))
    net = MultiBoxNet(ckpt["priors"])
    net.load_state_dict(ckpt["model"], strict=True)
    log.info("MultiBox model %s: %d priors, trained %d iterations", path, net.num_priors, ckpt["iteration"])
    return net.eval()
