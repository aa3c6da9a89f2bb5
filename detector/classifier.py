"""Region classifiers: a GoogLeNet trunk with a (K + 1)-way head, and an ensemble averaging them.

Output convention (every classifier and the ensemble): float32 probabilities ``[N, K + 1]``, column 0 =
background, column ``c + 1`` = foreground class ``c`` of ``classes`` (the Dataset label ``c``).

Two kinds of member, built by :func:`build_classifier` from :class:`~detector.config.ModelConfig`:

* **embedded default** (no checkpoints): the BVLC ImageNet GoogLeNet itself, its 1000 logits mapped to
  the 200 ILSVRC DET classes by :class:`detector.embedded.EmbeddedDetHead` (each class takes the
  probability of its WordNet descendants; column 0 = background as that module defines it);
* **trained checkpoints** (``model.checkpoints``, from detector/training): ``GoogLeNet(num_classes=K+1)``
  whose softmax is the output; several checkpoints form an ensemble (the paper: 6 models, 40% -> 43.9%
  mAP). They must share the class list and the preprocessing (one warp serves all members).

Inference streams regions in batches of ``batch_size`` under ``torch.inference_mode`` (memory bounded
independently of the number of proposals), optionally in channels-last memory format.
"""
from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import cpu
from .cli import UserError
from .config import BACKENDS, ModelConfig, WarpConfig, config_to_dict
from .fast_eager import fast_eager, plain_eager
from .warp import PreparedImage, PreprocessLike, warp_prepared

__all__ = ["ChannelLRN", "fast_lrn", "plain_lrn", "prepare_inference", "RegionClassifier", "Ensemble", "ClassifyTimings", "build_classifier", "load_checkpoint_member",
           "embedded_member", "find_meta_det", "BACKENDS", "BEST_BATCH", "batch_size_for"]

log = logging.getLogger(__name__)

# model.batch_size 0: each backend's batch from tools/benchmark.py's sweeps on this 2-core machine (README
# "Speed"): eager and bf16 were fastest at 8 in four of five sweeps (16 once); ONNX Runtime int8 with the
# fused LRN kernel was faster at 16 than at 8 in all three sweeps (149.0 / 138.1 / 144.9 vs 129.9 / 132.7 /
# 130.1; 32 was best twice, by 1-14%, at twice the memory); ONNX Runtime fp32 at 16 in three of four sweeps
# (within 10% either way). 64 was always slower. mnn: 8 (63.5 regions/s against 59.5 at 4 and 59.0 at 16, one
# paired run; README "Speed"). torch int8 (oneDNN): 32 since session 26 (16 before): on the AVX2 machine it was
# faster at 32 than at 16 in all 9 sweeps of sessions 19-26 (1-12%) and in 12 of 14 interleaved rounds on all
# 1,127 proposals of raccoon-70 (docs/speed_log.md, session 26). ONNX Runtime int8: 32 since session 27 (16
# before): 32 won 18 of 24 such rounds over sessions 26-27 (medians 11%, 1% and 7.5% faster) and session 27's
# sweep (79.7 against 68.4 regions/s), though it lost 4 of session 26's 6 sweeps by 1-10%.
BEST_BATCH = {"eager": 8, "bf16": 8, "onnx": 16, "onnx_int8": 32, "torch_int8": 32, "mnn": 8}


def batch_size_for(backend: str, batch_size: int = 0) -> int:
    """``batch_size`` if positive, else the backend's :data:`BEST_BATCH` (8 for any other)."""
    if batch_size < 0:
        raise UserError(f"model.batch_size must be >= 0 (0 = the backend's best), not {batch_size}")
    return batch_size or BEST_BATCH.get(backend, 8)


@functools.lru_cache(maxsize=1)
def _lrn_kernel():
    """:func:`detector.lrn_kernels.lrn_nhwc`, or None (logged once) when numba cannot be imported."""
    try:
        from .lrn_kernels import lrn_nhwc
    except ImportError as e:
        log.warning("fused LRN kernel unavailable (%s): LRNs run as torch operators, ~25%% slower", e)
        return None
    return lrn_nhwc


class ChannelLRN(nn.Module):
    """``nn.LocalResponseNorm`` computed for inference: same numbers (to float rounding), less time.

    ``b_c = a_c * (k + alpha / n * sum_{c' = c - n//2 .. c + (n-1)//2} a_{c'}^2) ^ -beta``.

    In inference on fp32 CPU tensors (no autograd, not traced or compiled) it runs the fused channels-last
    kernel of :mod:`detector.lrn_kernels`: one pass over a channels-last activation (a copy first for an
    NCHW one). tools/benchmark.py, warp + classify at batch 8, 2 threads, interleaved: 40.3 regions/s with the
    kernel vs 28.0 with the torch operators below (README "Speed").

    Otherwise (autograd, bf16 autocast, tracing for ONNX, torch.compile, no numba) torch operators: torch's
    own LRN sums the squares over the channel window with a 5-D ``avg_pool3d`` and raises to ``-beta`` with
    ``pow`` (~37% of a channels-last GoogLeNet forward); here the window sum is a 1x1 convolution with a fixed
    banded 0/1 matrix (oneDNN, any memory format) and ``s^-0.75 = rsqrt(s) * rsqrt(sqrt(s))``, ~2x faster.

    ``nhwc=True`` (what the ONNX export uses; always torch operators) computes the same numbers
    channels-last: the window sum is a matrix product ``[N, H, W, C] @ band[C, C]`` between two transposes.
    ONNX Runtime cancels the transposes against its own NHWC layout for int8 convolutions, so the quantised
    graph stays NHWC through the LRN and max-pools pool2 and inception_3a's pool in uint8; with the
    1x1-convolution form those ran in ORT's slow NCHW pooling (tools/profile_onnx.py: int8 82.7-86.1 ->
    99.7-104.0 regions/s; fp32 unchanged, 49.8 vs 52.3). The square is ``pow(x, 2)``, not ``x * x``: one input
    edge, so ORT dequantises the int8 input once for it, not twice. (With ``model.onnx_lrn=fused`` ONNX
    Runtime does not run these operators either: detector/backends.py cuts the graph around them.)
    """

    def __init__(self, lrn: nn.LocalResponseNorm, nhwc: bool = False, kernel: bool = True) -> None:
        super().__init__()
        self.lrn = lrn  # the original, for :func:`plain_lrn`
        self.nhwc = nhwc
        self.kernel = kernel  # False: always the torch operators (model.lrn_kernel)
        self._band: dict[int, torch.Tensor] = {}

    def _weight(self, channels: int) -> torch.Tensor:
        w = self._band.get(channels)
        if w is None:
            n = self.lrn.size
            with torch.inference_mode(False):  # a normal tensor, usable with and without autograd
                i = torch.arange(channels)
                band = (i[None, :] >= i[:, None] - n // 2) & (i[None, :] <= i[:, None] + (n - 1) // 2)
                w = self._band[channels] = (band.float() * (self.lrn.alpha / n))[:, :, None, None]
        return w

    def _kernel_applies(self, x: torch.Tensor) -> bool:
        return (self.kernel and not self.nhwc and x.dim() == 4 and x.dtype == torch.float32 and x.device.type == "cpu"
                and not (x.requires_grad and torch.is_grad_enabled()) and not torch.jit.is_tracing()
                and not torch.jit.is_scripting() and not torch.compiler.is_compiling()
                and _lrn_kernel() is not None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._kernel_applies(x):
            a = x.permute(0, 2, 3, 1)  # a view, contiguous when x is channels-last
            y = _lrn_kernel()(a.contiguous().numpy(), self.lrn.size, self.lrn.alpha, self.lrn.beta, self.lrn.k,
                              threads=torch.get_num_threads())
            return torch.from_numpy(y).permute(0, 3, 1, 2)  # channels-last memory
        # int(): the channel count is static; under ONNX tracing this keeps the band a constant
        w = self._weight(int(x.shape[1])).to(x.dtype)
        if self.nhwc:
            x = x.permute(0, 2, 3, 1)
            s = torch.matmul(x.pow(2), w[:, :, 0, 0]).add_(self.lrn.k)  # the band is symmetric
        else:
            s = F.conv2d(x * x, w).add_(self.lrn.k)
        if self.lrn.beta == 0.75:
            y = x * torch.rsqrt(s) * torch.rsqrt(torch.sqrt(s))
        else:
            y = x * s.pow(-self.lrn.beta)
        return y.permute(0, 3, 1, 2) if self.nhwc else y


def _swap(module: nn.Module, fn) -> nn.Module:
    for name, child in list(module.named_children()):
        new = fn(child)
        if new is not child:
            setattr(module, name, new)
        elif not isinstance(child, ChannelLRN):  # never into a ChannelLRN: fast_lrn twice is fast_lrn once
            _swap(child, fn)
    return module


def fast_lrn(module: nn.Module, nhwc: bool = False, kernel: bool = True) -> nn.Module:
    """Replace every ``nn.LocalResponseNorm`` inside ``module`` by :class:`ChannelLRN` (in place), computed
    in the ``nhwc`` form or not, with the fused ``kernel`` where it applies or not (a ChannelLRN already there
    is switched to these)."""
    def swap(m):
        if isinstance(m, ChannelLRN):
            m.nhwc, m.kernel = nhwc, kernel
        return ChannelLRN(m, nhwc, kernel) if isinstance(m, nn.LocalResponseNorm) else m
    return _swap(module, swap)


def plain_lrn(module: nn.Module) -> nn.Module:
    """Undo :func:`fast_lrn` (in place): back to torch's ``nn.LocalResponseNorm``."""
    return _swap(module, lambda m: m.lrn if isinstance(m, ChannelLRN) else m)


def prepare_inference(module: nn.Module, lrn_kernel: bool = True, channels_last: bool = True,
                      eager: tuple[bool, bool] | None = (True, True)) -> nn.Module:
    """Set ``module`` up for inference as an eager :class:`Ensemble` runs it (in place): eval mode, its LRNs as
    :class:`ChannelLRN` (with the fused kernel if ``lrn_kernel``), channels-last memory if ``channels_last``,
    and with ``eager = (eager_kernels, winograd)`` the inference path of :mod:`detector.fast_eager` (or torch's
    own modules when ``eager_kernels`` is false); ``eager=None`` leaves convolutions and poolings as they are."""
    fast_lrn(module.eval(), kernel=lrn_kernel)
    if eager is not None:
        if eager[0]:
            fast_eager(module, winograd=eager[1])
        else:
            plain_eager(module)
    if channels_last:
        module.to(memory_format=torch.channels_last)
    return module


class RegionClassifier(nn.Module):
    """One region classifier: ``net`` (warped regions ``[N, 3, S, S]`` -> logits ``[N, L]``) followed by
    ``head`` (logits -> probabilities ``[N, K + 1]``; ``None`` = softmax, then ``L = K + 1``).

    ``classes`` / ``class_names``: the K foreground classes in output order (column ``c + 1``);
    ``preprocess``: the pixel normalisation the net was trained with (used by the warp);
    ``source``: where it came from (weights/checkpoint path + sha256), for logs.
    """

    def __init__(self, net: nn.Module, classes: Sequence[str], class_names: Sequence[str],
                 preprocess: PreprocessLike, head: nn.Module | None = None, source: str = "") -> None:
        super().__init__()
        if len(classes) != len(class_names):
            raise ValueError(f"{len(classes)} classes but {len(class_names)} class names")
        self.net = net
        self.head = head
        self.classes = tuple(classes)
        self.class_names = tuple(class_names)
        self.preprocess = preprocess
        self.source = source

    @property
    def num_classes(self) -> int:
        """K, the number of foreground classes."""
        return len(self.classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` float ``[N, 3, S, S]`` (preprocessed warps) -> probabilities ``[N, K + 1]``."""
        logits = self.net(x)
        with torch.autocast("cpu", enabled=False):  # the head in fp32 even under bf16 autocast: no tied scores
            logits = logits.float()
            probs = self.head(logits) if self.head is not None else torch.softmax(logits, dim=1)
        if probs.shape[1] != self.num_classes + 1:
            raise ValueError(f"classifier {self.source or '?'} gives {probs.shape[1]} outputs, expected "
                             f"K + 1 = {self.num_classes + 1}")
        return probs.float()


@dataclass
class ClassifyTimings:
    """Seconds spent per stage by :meth:`Ensemble.classify_regions` (accumulated over calls)."""

    warp_s: float = 0.0
    classify_s: float = 0.0
    regions: int = 0

    def reset(self) -> None:
        self.warp_s = self.classify_s = 0.0
        self.regions = 0


@dataclass
class Ensemble:
    """N region classifiers sharing classes and preprocessing; their softmax probabilities are averaged.

    ``batch_size``: regions per forward pass; ``channels_last``: run convolutions on NHWC memory;
    ``backend``: "eager" (fp32) or "bf16" (CPU autocast). Members are put in eval mode and their LRN
    layers computed by :class:`ChannelLRN` (same numbers, faster), with its fused kernel if ``lrn_kernel``.
    With the eager backend and ``eager_kernels`` their convolutions and max poolings run the inference path of
    :mod:`detector.fast_eager` (Winograd for 3x3 convolutions if ``winograd``).
    """

    members: Sequence[RegionClassifier]
    batch_size: int = 64
    channels_last: bool = True
    backend: str = "eager"
    lrn_kernel: bool = True
    eager_kernels: bool = True
    winograd: bool = True
    timings: ClassifyTimings = field(default_factory=ClassifyTimings)

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("an ensemble needs at least one classifier")
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.backend not in BACKENDS:
            raise UserError(f"model.backend '{self.backend}' is not available here; choose one of {BACKENDS}")
        first = self.members[0]
        for m in self.members[1:]:
            if m.classes != first.classes:
                raise UserError(f"ensemble members disagree on classes: {first.source} has "
                                f"{first.num_classes} classes, {m.source} has {m.num_classes} "
                                "(or a different order)")
            if preprocess_key(m.preprocess) != preprocess_key(first.preprocess):
                raise UserError(f"ensemble members need the same preprocessing: {first.source} uses "
                                f"{preprocess_key(first.preprocess)}, {m.source} uses {preprocess_key(m.preprocess)}")
        self.members = list(self.members)
        for m in self.members:
            if not isinstance(m, nn.Module):  # an ONNX Runtime session (detector/backends.py)
                continue
            prepare_inference(m, self.lrn_kernel, self.channels_last,
                              # (under bf16 autocast the modules run torch's own path anyway)
                              (self.eager_kernels, self.winograd) if self.backend == "eager" else None)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.members[0].classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.members[0].class_names

    @property
    def preprocess(self) -> PreprocessLike:
        return self.members[0].preprocess

    @property
    def num_classes(self) -> int:
        return self.members[0].num_classes

    def predict(self, x: torch.Tensor) -> np.ndarray:
        """Average member probabilities for one batch: ``[n, 3, S, S]`` -> float32 ``[n, K + 1]``."""
        if len(x) == 0:
            return np.zeros((0, self.num_classes + 1), np.float32)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                     enabled=self.backend == "bf16"):
            total = None
            for m in self.members:
                p = m(x)
                total = p if total is None else total + p
            return (total / len(self.members)).float().numpy()

    def classify_regions(self, img: PreparedImage, boxes: np.ndarray, warp_cfg: WarpConfig,
                         progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Warp and classify ``boxes`` (float32 ``[N, 4]`` xyxy) of ``img`` in batches of ``batch_size``.

        Returns float32 ``[N, K + 1]`` (``[0, K + 1]`` for no boxes); stage times go to ``timings``.
        """
        import time

        n = len(boxes)
        out = np.zeros((n, self.num_classes + 1), np.float32)
        for start in range(0, n, self.batch_size):
            sl = slice(start, min(start + self.batch_size, n))
            t0 = time.perf_counter()
            x = warp_prepared(img, boxes[sl], warp_cfg)
            t1 = time.perf_counter()
            out[sl] = self.predict(x)
            t2 = time.perf_counter()
            self.timings.warp_s += t1 - t0
            self.timings.classify_s += t2 - t1
            self.timings.regions += sl.stop - sl.start
            if progress is not None:
                progress(sl.stop - sl.start)
        return out


def preprocess_key(pre: PreprocessLike) -> tuple:
    """The numbers that define a preprocessing: channel order, scale, mean, std (comparable, JSON-able)."""
    return (str(pre.channel_order).upper(), float(pre.scale), tuple(map(float, pre.mean)),
            tuple(map(float, pre.std)))


# ---------------------------------------------------------------------------------------------------------
def find_meta_det(explicit: str | os.PathLike | None = None) -> Path:
    """The devkit's ``meta_det.mat`` (200 DET classes + WordNet hierarchy) for the embedded default.

    Looked for: ``explicit`` (a file, or a devkit folder), ``$GOOGLENET_RCNN_DEVKIT`` (devkit folder),
    ``$GOOGLENET_RCNN_SHARED/data/ilsvrc2014_devkit``; otherwise a :class:`UserError` saying how to
    provide it.
    """
    candidates: list[tuple[str, Path]] = []
    if explicit:
        candidates.append(("--devkit / explicit path", Path(explicit)))
    if os.environ.get("GOOGLENET_RCNN_DEVKIT"):
        candidates.append(("$GOOGLENET_RCNN_DEVKIT", Path(os.environ["GOOGLENET_RCNN_DEVKIT"])))
    if os.environ.get("GOOGLENET_RCNN_SHARED"):
        candidates.append(("$GOOGLENET_RCNN_SHARED",
                           Path(os.environ["GOOGLENET_RCNN_SHARED"]) / "data" / "ilsvrc2014_devkit"))
    for origin, p in candidates:
        for f in (p, p / "data" / "meta_det.mat", p / "meta_det.mat"):
            if f.is_file():
                return f
        if explicit and origin.startswith("--devkit"):
            raise UserError(f"{p}: no meta_det.mat there (expected a file or an ILSVRC devkit folder "
                            "containing data/meta_det.mat)")
    raise UserError("the embedded ImageNet->DET default needs the ILSVRC devkit's meta_det.mat: pass "
                    "--devkit DIR (the ILSVRC 2014 devkit folder) or set GOOGLENET_RCNN_DEVKIT; or give a "
                    "trained detector with --checkpoint")


def embedded_member(cfg: ModelConfig, meta_det: str | os.PathLike | None = None) -> RegionClassifier:
    """The BVLC ImageNet GoogLeNet + EmbeddedDetHead: a classifier of the 200 ILSVRC DET classes."""
    from .datasets.ilsvrc_meta import detection_classes, read_meta_det
    from .embedded import EmbeddedDetHead
    from .weights import build_backbone, find_weights

    if cfg.backbone != "bvlc":
        raise UserError(f"the embedded default uses the BVLC weights (model.backbone=bvlc), got "
                        f"model.backbone={cfg.backbone!r}; give --checkpoint for another backbone")
    meta_path = find_meta_det(meta_det)  # before the weights: the cheaper error first
    net, pre, source = build_backbone("bvlc", 1000, cfg.weights)
    synset_words = find_weights(cfg.weights).with_name("synset_words.txt")
    head = EmbeddedDetHead(meta_path, synset_words)
    det = detection_classes(read_meta_det(meta_path))
    log.info("embedded default: BVLC GoogLeNet %s + ImageNet->DET head from %s (%d classes can fire)",
             source, meta_path, head.firing_classes)
    return RegionClassifier(net, [s.wnid for s in det], [s.name for s in det], pre, head=head, source=source)


def load_checkpoint_member(path: str | os.PathLike, warp_cfg: WarpConfig | None = None) -> RegionClassifier:
    """A trained region classifier from a detector/training checkpoint (``detector.training.checkpoint``).

    Uses its ``model`` weights (the EMA average when training kept one), ``classes``, ``class_names`` and
    ``arch`` (``"bvlc_googlenet"`` or ``"bvlc_googlenet+aux"``). Loading is strict: a missing or
    unexpected tensor is an error listing them. When ``warp_cfg`` is given and the checkpoint's training
    warp differs, a warning is logged (R-CNN: train and test crops must be identical).
    """
    from .googlenet import GoogLeNet
    from .training.checkpoint import load_checkpoint
    from .weights import BVLC_PREPROCESS

    p = Path(path)
    ckpt = load_checkpoint(p)  # CheckpointError (a UserError) for a missing / unreadable / foreign file
    missing = [k for k in ("model", "classes", "class_names") if k not in ckpt]
    if missing:
        raise UserError(f"{p}: checkpoint lacks {missing} (has {sorted(ckpt)})")
    arch = str(ckpt.get("arch", "bvlc_googlenet"))
    if arch not in ("bvlc_googlenet", "bvlc_googlenet+aux"):
        raise UserError(f"{p}: architecture {arch!r} is not supported by the detector (bvlc_googlenet[+aux])")
    classes, names = list(ckpt["classes"]), list(ckpt["class_names"])
    net = GoogLeNet(num_classes=len(classes) + 1, aux_logits=arch.endswith("+aux"))
    result = net.load_state_dict(ckpt["model"], strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise UserError(f"{p}: weights do not fit GoogLeNet(num_classes={len(classes) + 1}, arch {arch}): "
                        f"missing {result.missing_keys[:8]}, unexpected {result.unexpected_keys[:8]}")
    train_cfg = ckpt.get("config") or {}
    if warp_cfg is not None and isinstance(train_cfg, dict) and isinstance(train_cfg.get("warp"), dict):
        if train_cfg["warp"] != config_to_dict(warp_cfg):
            log.warning("%s was trained with warp %s but is tested with %s (R-CNN: crops must match)",
                        p, train_cfg["warp"], config_to_dict(warp_cfg))
    log.info("loaded checkpoint %s: %s, %d classes, iteration %s", p, arch, len(classes), ckpt.get("iteration"))
    return RegionClassifier(net, classes, names, BVLC_PREPROCESS, source=str(p))


def build_classifier(cfg: ModelConfig, warp_cfg: WarpConfig | None = None,
                     meta_det: str | os.PathLike | None = None) -> Ensemble:
    """The ensemble described by ``cfg``: its checkpoints, or the embedded default when there are none.

    Also applies ``cfg.threads`` (> 0) to torch's intra-op thread pool.
    """
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if cfg.backend == "bf16" and not cpu.bf16_supported():
        log.warning("model.backend=bf16: this CPU (%s) has no native bf16 dot products (AVX512-BF16 or AMX), so "
                    "autocast emulates them, far slower than fp32 (9x on an AVX2 EPYC: README \"Speed\"); "
                    "model.backend=eager or onnx is faster", cpu.cpu_model())
    members = ([load_checkpoint_member(c, warp_cfg) for c in cfg.checkpoints] if cfg.checkpoints
               else [embedded_member(cfg, meta_det)])
    if cfg.backend.startswith("onnx") or cfg.backend == "mnn":
        from .backends import convert_members, int8_recipe
        recipe = int8_recipe(cfg.int8_lrn_sums, cfg.int8_calibration, cfg.int8_weight_bits)
        if cfg.backend == "onnx_int8":
            log.info("onnx_int8 recipe: %s", recipe)
        members = convert_members(members, cfg.backend, warp_cfg, cfg.threads, recipe=recipe, lrn=cfg.onnx_lrn,
                                  winograd=cfg.winograd)
    elif cfg.backend == "torch_int8":
        from .quantized import convert_members_int8
        members = convert_members_int8(members, warp_cfg, cfg.int8_lrn_sums, cfg.int8_calibration,
                                       weight_bits=cfg.int8_weight_bits)
    ens = Ensemble(members, batch_size=batch_size_for(cfg.backend, cfg.batch_size), channels_last=cfg.channels_last,
                   backend=cfg.backend, lrn_kernel=cfg.lrn_kernel, eager_kernels=cfg.eager_kernels,
                   winograd=cfg.winograd)
    log.info("region classifier: %d member(s), %d classes, batch %d, %d thread(s), channels_last=%s, %s",
             len(members), ens.num_classes, ens.batch_size, torch.get_num_threads(), cfg.channels_last,
             cfg.backend)
    log.info("CPU: %s", cpu.summary())  # the speed (and, for int8, the weight width) depends on it: README "Speed"
    return ens
