"""Fine-tuning GoogLeNet region classifiers, R-CNN style (the paper, section 8; R-CNN's recipe).

SGD with momentum 0.9, weight decay 5e-4, base lr 0.001 with step decay (``lr_step``, ``lr_gamma``), the
freshly initialised K+1-way head (and auxiliary heads) at ``head_lr_mult`` x the base lr (R-CNN's fc8),
auxiliary heads on 4a and 4d with loss weight 0.3 (the paper; fresh: the BVLC file has none), dropout
0.4 / 0.7 as the paper, optional photometric distortion, Polyak averaging as an EMA of the weights
(the averaged weights are the model saved for use), optional freezing of the layers below
``freeze_below`` (CPU budget: see docs/sections/training.md).

Resuming: the minibatch of iteration ``t`` is a pure function of ``(seed, t)`` (sampling.RegionSampler),
and the checkpoint holds the raw weights, EMA, optimizer, scheduler and the torch/numpy/python RNG
states (dropout draws from torch's generator), so a run killed at any moment and resumed from its last
checkpoint replays exactly the iterations an uninterrupted run would have made.
"""
from __future__ import annotations

import logging
import math
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, TrainConfig, WarpConfig
from ..imageio import read_image
from ..structures import ImageRecord
from ..warp import PreprocessLike, prepare_image, warp_prepared
from .checkpoint import (FORMAT, FORMAT_VERSION, check_compatible, load_checkpoint, rng_state, save_atomic,
                         set_rng_state)
from .ema import ModelEMA
from .sampling import Minibatch, RegionSampler

__all__ = ["RegionLoader", "photometric_distort", "split_param_groups", "TrainResult", "train",
           "peak_memory_mb", "HEAD_PREFIXES"]

log = logging.getLogger(__name__)

HEAD_PREFIXES = ("classifier.", "aux1.", "aux2.")  # freshly initialised layers (learn at head_lr_mult)


def peak_memory_mb() -> float:
    """Peak resident memory of this process (``resource.getrusage`` maxrss, KiB on Linux) in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def photometric_distort(image: np.ndarray, u: np.ndarray, strength: float = 0.2) -> np.ndarray:
    """Brightness, contrast and saturation jitter of an RGB uint8 ``[H, W, 3]`` image.

    ``u``: three numbers in [0, 1) (from the sampler) -> factors ``1 + strength * (2u - 1)`` applied as
    brightness (scale), contrast (about the mean grey) and saturation (about the per-pixel grey).
    """
    f = 1.0 + strength * (2.0 * np.asarray(u, np.float32) - 1.0)
    x = image.astype(np.float32) * f[0]
    grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
    x = (x - grey.mean()) * f[1] + grey.mean()
    grey = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    x = grey + (x - grey) * f[2]
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


class RegionLoader:
    """Turns a :class:`Minibatch` into network input: reads each image once (decoded images are cached
    in memory when ``cache_images``), applies photometric distortion, and warps the regions with the
    SAME code as testing (:func:`detector.warp.warp_prepared`, plus mirroring).

    Returns ``(x float32 [B, 3, S, S], labels int64 [B])``.
    """

    def __init__(self, records: Sequence[ImageRecord], warp_cfg: WarpConfig, preprocess: PreprocessLike,
                 photometric: bool = False, cache_images: bool = True) -> None:
        self.records = list(records)
        self.warp_cfg = warp_cfg
        self.preprocess = preprocess
        self.photometric = photometric
        self.cache_images = cache_images
        self._cache: dict[int, np.ndarray] = {}

    def image(self, i: int) -> np.ndarray:
        if i in self._cache:
            return self._cache[i]
        rec = self.records[i]
        if rec.image_path is None:
            raise ValueError(f"image {rec.image_id}: no image file (annotation-only record) to train on")
        img = read_image(rec.image_path)
        if img.shape[:2] != (rec.height, rec.width):
            log.warning("%s: image is %dx%d but its annotation says %dx%d", rec.image_path, img.shape[1],
                        img.shape[0], rec.width, rec.height)
        if self.cache_images:
            self._cache[i] = img
        return img

    def load(self, batch: Minibatch) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.warp_cfg.size
        x = torch.empty((len(batch), 3, s, s), dtype=torch.float32)
        for k, i in enumerate(np.unique(batch.image_index)):
            sel = np.flatnonzero(batch.image_index == i)
            img = self.image(int(i))
            if self.photometric:
                img = photometric_distort(img, batch.photometric[k])
            x[sel] = warp_prepared(prepare_image(img, self.preprocess), batch.boxes[sel], self.warp_cfg,
                                   flip=batch.flip[sel])
        return x, torch.from_numpy(batch.labels)


def split_param_groups(model: nn.Module, base_lr: float, head_lr_mult: float) -> list[dict]:
    """Trainable parameters in two SGD groups: pretrained trunk (lr) and fresh heads (lr x mult)."""
    trunk, head = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (head if name.startswith(HEAD_PREFIXES) else trunk).append(p)
    groups = [{"params": trunk, "lr": base_lr, "name": "trunk"},
              {"params": head, "lr": base_lr * head_lr_mult, "name": "heads"}]
    return [g for g in groups if g["params"]]


def _loss(out, labels: torch.Tensor, aux_weight: float) -> torch.Tensor:
    if isinstance(out, tuple):
        logits, aux1, aux2 = out
        loss = F.cross_entropy(logits, labels)
        if aux_weight > 0:
            loss = loss + aux_weight * (F.cross_entropy(aux1, labels) + F.cross_entropy(aux2, labels))
        return loss
    return F.cross_entropy(out, labels)


@dataclass
class TrainResult:
    """What :func:`train` leaves behind: the run folder's ``last.pt`` / ``best.pt`` and the curves."""

    last: Path
    best: Path | None
    iteration: int
    loss_history: list = field(default_factory=list)
    val_history: list = field(default_factory=list)
    regions_per_s: float = 0.0  # forward + backward only (excludes reading / warping)
    peak_mb: float = 0.0


def train(model: nn.Module, sampler: RegionSampler, loader: Callable[[Minibatch], tuple[torch.Tensor, torch.Tensor]],
          cfg: TrainConfig, out_dir: str | Path, meta: dict, resume: bool = False,
          validate: Callable[[nn.Module], float] | None = None,
          progress: Callable[[int, dict], None] | None = None,
          stop_after: int | None = None,
          forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None) -> TrainResult:
    """Fine-tune ``model`` (frozen layers already set) for ``cfg.iterations`` SGD steps.

    ``loader(batch) -> (x [B, 3, S, S], labels [B])``; ``meta``: ``classes``, ``class_names``, ``arch``,
    ``config`` (resolved config dict), ``weights_sha256`` -- stored in every checkpoint. ``validate(model)
    -> mAP`` is called on the averaged model every ``cfg.eval_every`` steps (0: never) and at the end;
    the best goes to ``best.pt``. ``resume``: continue from ``out_dir/last.pt`` (refused when its classes
    or architecture differ). ``progress(iteration, stats)`` is called after every step.
    ``stop_after``: stop (after checkpointing) once this many steps are done (tests simulate a kill).
    ``forward(model, x)``: how the loader's ``x`` becomes the output (default ``model(x)``; cached frozen
    features use detector.training.features.forward_from_features).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    last_path, best_path = out / "last.pt", out / "best.pt"
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    groups = split_param_groups(model, cfg.base_lr, cfg.head_lr_mult)
    if not groups:
        raise ConfigError("no trainable parameters (train.freeze_below froze everything?)")
    opt = torch.optim.SGD(groups, lr=cfg.base_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, cfg.lr_step), gamma=cfg.lr_gamma)
    ema = ModelEMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    it, best_metric = 0, None
    loss_hist: list[list[float]] = []
    val_hist: list[list[float]] = []
    if resume:
        ckpt = load_checkpoint(last_path)
        check_compatible(ckpt, last_path, meta["classes"], meta["arch"])
        model.load_state_dict(ckpt["raw_model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        if ema is not None:
            if ckpt.get("ema") is None:
                raise ConfigError(f"{last_path}: checkpoint has no EMA state but train.ema_decay > 0")
            ema.load_state_dict({**ckpt["ema"], "shadow": ckpt["model"]})
        sampler.load_state_dict(ckpt["sampler"])
        set_rng_state(ckpt["rng"])
        it, best_metric = int(ckpt["iteration"]), ckpt.get("best_metric")
        loss_hist, val_hist = ckpt["history"]["loss"], ckpt["history"]["val"]
        log.info("resumed %s at iteration %d", last_path, it)
    else:
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)

    def checkpoint(path: Path) -> None:
        ckpt = {"format": FORMAT, "format_version": FORMAT_VERSION, "arch": meta["arch"],
                "model": ema.shadow if ema is not None else model.state_dict(),
                "raw_model": model.state_dict(),
                "ema": {"decay": ema.decay, "updates": ema.updates} if ema is not None else None,
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "iteration": it,
                "rng": rng_state(), "sampler": sampler.state_dict(), "config": meta.get("config", {}),
                "classes": list(meta["classes"]), "class_names": list(meta["class_names"]),
                "history": {"loss": loss_hist, "val": val_hist}, "best_metric": best_metric,
                "weights_sha256": meta.get("weights_sha256")}
        save_atomic(ckpt, path)

    def averaged() -> nn.Module:
        return ema.averaged_model(model) if ema is not None else model

    fb_time, fb_regions = 0.0, 0
    model.train()
    while it < cfg.iterations:
        batch = sampler.sample(it)
        x, y = loader(batch)
        t0 = time.perf_counter()
        loss = _loss(model(x) if forward is None else forward(model, x), y, cfg.aux_loss_weight)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss became {loss.item()} at iteration {it} (lower train.base_lr?)")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        fb_time += time.perf_counter() - t0
        fb_regions += len(y)
        if ema is not None:
            ema.update(model)
        it += 1
        loss_hist.append([it, float(loss.item())])
        is_last = it >= cfg.iterations
        if validate is not None and ((cfg.eval_every > 0 and it % cfg.eval_every == 0) or is_last):
            m = averaged()
            m.eval()
            metric = float(validate(m))
            model.train()
            val_hist.append([it, metric])
            log.info("iteration %d: validation mAP %.4f", it, metric)
            if best_metric is None or metric > best_metric:
                best_metric = metric
                checkpoint(best_path)
        if is_last or (cfg.checkpoint_every > 0 and it % cfg.checkpoint_every == 0) or \
                (stop_after is not None and it >= stop_after):
            checkpoint(last_path)
        if progress is not None:
            progress(it, {"loss": float(loss.item()), "lr": opt.param_groups[0]["lr"],
                          "regions_per_s": fb_regions / fb_time if fb_time > 0 else 0.0})
        if stop_after is not None and it >= stop_after:
            break
    rps = fb_regions / fb_time if fb_time > 0 else 0.0
    peak = peak_memory_mb()
    log.info("training stopped at iteration %d; forward+backward %.1f regions/s; peak memory %.0f MiB",
             it, rps, peak)
    return TrainResult(last_path, best_path if best_path.is_file() else None, it, loss_hist, val_hist, rps, peak)
