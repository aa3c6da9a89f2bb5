"""The eager fp32 backend's inference path: GoogLeNet's convolutions and max poolings, faster, same network.

The default backend (``model.backend=eager``) runs the region classifier as torch modules. In fp32
inference on channels-last CPU tensors (:func:`inference_applies`) :func:`fast_eager` makes them run:

* **each convolution with its ReLU as one oneDNN primitive** (``torch.ops.mkldnn._convolution_pointwise``,
  what torch.compile's CPU backend emits): the same convolution kernels as ``F.conv2d``, with the ReLU applied
  to the output while it is in cache instead of in a second pass over memory. Bit-identical outputs. conv1
  (7x7/2 on 3 channels) also gets a faster kernel this way: 9.4 vs 21.9 ms at batch 8.
* **the 3x3 convolutions by Winograd's F(4x4, 3x3)** (``model.winograd``; :mod:`detector.eager_kernels`):
  4x fewer multiplications in the 36 matrix products that replace each one, which oneDNN runs as one grouped
  1x1 convolution; the input and output transforms are numba kernels. fp32 rounding differs from the direct
  convolution (relative error ~1e-5 per layer, the region probabilities ~1e-6: tests/test_fast_eager.py).
  Only on maps of at least :data:`WINOGRAD_MIN_SIZE` pixels a side: on GoogLeNet's 7x7 maps the transforms
  cost more than they save (measured). The batch is transformed in chunks of about :data:`CHUNK_BYTES` so the
  tiles stay in cache between the three steps.
* **max pooling by a numba kernel** (:class:`ChannelMaxPool`): the max of the same numbers, bit-identical,
  2-4x faster than torch's channels-last pooling at GoogLeNet's shapes.

Everything else (training, autograd, bf16 autocast, ONNX export, FX quantisation, torch.compile, NCHW
inputs) runs the torch modules unchanged; the modules keep their parameters and state-dict keys, and
:func:`plain_eager` undoes :func:`fast_eager`. README "Speed" has the measurements.
"""
from __future__ import annotations

import functools
import logging

import numpy as np
import torch
import torch.nn as nn

from .googlenet import ConvReLU

__all__ = ["fast_eager", "plain_eager", "inference_applies", "FastConv", "ChannelMaxPool", "WINOGRAD_MIN_SIZE",
           "CHUNK_BYTES"]

log = logging.getLogger(__name__)

WINOGRAD_MIN_SIZE = 14  # GoogLeNet's 56, 28 and 14-pixel maps; not inception 5's 7x7 (slower there)
CHUNK_BYTES = 8 << 20  # transformed tiles per chunk (measured at conv2: 2 MB 43.8, 8 MB 41.9, whole batch 65.9 ms)


@functools.cache
def _pointwise_conv():
    """``torch.ops.mkldnn._convolution_pointwise``, or None (logged once) in a torch without it."""
    op = getattr(torch.ops.mkldnn, "_convolution_pointwise", None) if torch.backends.mkldnn.is_available() else None
    if op is None:
        log.info("this torch has no oneDNN fused convolution; the eager classifier runs torch's own modules")
    return op


@functools.cache
def _kernels():
    """:mod:`detector.eager_kernels`, or None (logged once) when numba cannot be imported."""
    try:
        from . import eager_kernels
    except ImportError as e:
        log.warning("eager kernels unavailable (%s); max pooling and 3x3 convolutions run torch's own", e)
        return None
    return eager_kernels


def _autocast_cpu() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


def inference_applies(x) -> bool:
    """Whether the fast path may run on ``x``: a plain float32 CPU tensor ``[N, C, H, W]`` in channels-last
    memory, without autograd, bf16 autocast, tracing, scripting or compiling (an FX proxy or a fake tensor
    is not a plain tensor)."""
    return (type(x) is torch.Tensor and x.dim() == 4 and x.dtype == torch.float32 and x.device.type == "cpu"
            and x.is_contiguous(memory_format=torch.channels_last) and not torch.is_grad_enabled()
            and not _autocast_cpu() and not torch.jit.is_tracing() and not torch.jit.is_scripting()
            and not torch.compiler.is_compiling())


def _nhwc(t: torch.Tensor) -> np.ndarray:
    """The channels-last tensor ``t`` ``[N, C, H, W]`` as its ``[N, H, W, C]`` numpy view (no copy)."""
    return t.permute(0, 2, 3, 1).numpy()


class FastConv:
    """What a :class:`~detector.googlenet.ConvReLU` runs under :func:`inference_applies` (its ``fast``
    attribute, set by :func:`fast_eager`): the fused oneDNN convolution + ReLU, or for a 3x3/1 convolution on a
    large enough map Winograd F(4x4, 3x3) when ``winograd``. Holds the transformed weights of one convolution,
    recomputed when its weights change; pickles without them."""

    def __init__(self, winograd: bool = True) -> None:
        self.winograd = winograd
        self._weights: tuple | None = None  # (weight version, data pointer, transformed weight, bias)

    def __getstate__(self) -> dict:
        return {"winograd": self.winograd, "_weights": None}

    def __repr__(self) -> str:
        return f"FastConv(winograd={self.winograd})"

    @staticmethod
    def fits_winograd(conv: nn.Conv2d, x: torch.Tensor) -> bool:
        return (conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
                and conv.dilation == (1, 1) and conv.groups == 1 and conv.bias is not None
                and conv.padding_mode == "zeros" and min(x.shape[2:]) >= WINOGRAD_MIN_SIZE)

    def __call__(self, conv: nn.Conv2d, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor | None:
        """``relu(conv(x))``, or None where the plain module must run (no oneDNN op, string padding).
        ``out``: where Winograd writes its result (a float32 channels-last tensor of the output's shape, e.g. one
        the caller keeps across batches: a fresh 38 MB output's page faults cost conv2 ~13 of its ~50 ms at batch
        16); ignored by the other paths."""
        op = _pointwise_conv()
        if op is None or isinstance(conv.padding, str) or conv.padding_mode != "zeros":
            return None
        if self.winograd and self.fits_winograd(conv, x) and _kernels() is not None:
            return self._winograd(conv, x, op, out)
        return op(x, conv.weight, conv.bias, list(conv.padding), list(conv.stride), list(conv.dilation),
                  conv.groups, "relu", [], "")

    def _transformed(self, conv: nn.Conv2d) -> tuple[torch.Tensor, np.ndarray]:
        """``G g G^T`` of every filter as the weight ``[36 K, C, 1, 1]`` of a 36-group 1x1 convolution
        (group ``a * 6 + b`` holds element ``(a, b)``; computed in float64), and the bias."""
        w = conv.weight
        try:
            version = w._version
        except RuntimeError:  # an inference tensor (a copy made under inference_mode) has no version counter
            version = None
        key = (version, w.data_ptr())
        if self._weights is None or self._weights[:2] != key:
            g = _kernels().WINOGRAD_G
            u = np.einsum("ai,kcij,bj->abkc", g, w.detach().double().numpy(), g)
            k, c = w.shape[:2]
            with torch.inference_mode(False):
                wg = torch.from_numpy(u.reshape(36 * k, c, 1, 1)).float().contiguous(memory_format=torch.channels_last)
            self._weights = (*key, wg, conv.bias.detach().float().numpy().copy())
        return self._weights[2], self._weights[3]

    def _winograd(self, conv: nn.Conv2d, x: torch.Tensor, op, out: torch.Tensor | None = None) -> torch.Tensor:
        kern = _kernels()
        wg, bias = self._transformed(conv)
        n, c, h, w = x.shape
        k = conv.out_channels
        th, tw = -(-h // 4), -(-w // 4)
        per = max(1, CHUNK_BYTES // (th * tw * 36 * max(c, k) * 4))
        threads = torch.get_num_threads()
        if out is None:
            out = torch.empty(n, k, h, w, memory_format=torch.channels_last)
        elif (out.shape != (n, k, h, w) or out.dtype != torch.float32
              or not out.is_contiguous(memory_format=torch.channels_last)):
            raise ValueError(f"Winograd output must be float32 channels-last {(n, k, h, w)}, got {out.dtype} "
                             f"{tuple(out.shape)}")
        xh, yh = _nhwc(x), _nhwc(out)
        for s in range(0, n, per):
            e = min(n, s + per)
            v = torch.empty(e - s, 36 * c, th, tw, memory_format=torch.channels_last)
            kern.winograd_input(xh[s:e], _nhwc(v).reshape(e - s, th, tw, 36, c), threads)
            m = op(v, wg, None, [0, 0], [1, 1], [1, 1], 36, "none", [], "")
            m = m.contiguous(memory_format=torch.channels_last)
            kern.winograd_output(_nhwc(m).reshape(e - s, th, tw, 36, k), bias, yh[s:e], True, threads)
        return out


class ChannelMaxPool(nn.Module):
    """``pool`` (an ``nn.MaxPool2d``) computed by :func:`detector.eager_kernels.max_pool_nhwc` under
    :func:`inference_applies`, by ``pool`` itself otherwise. Same numbers."""

    def __init__(self, pool: nn.MaxPool2d) -> None:
        super().__init__()
        self.pool = pool

    def _params(self) -> tuple[int, int, int] | None:
        p = self.pool
        ks, st, pd, dl = (v if isinstance(v, tuple) else (v, v) for v in (p.kernel_size, p.stride or p.kernel_size,
                                                                          p.padding, p.dilation))
        if ks[0] != ks[1] or st[0] != st[1] or pd[0] != pd[1] or dl != (1, 1) or p.return_indices:
            return None
        return ks[0], st[0], pd[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = self._params()
        if params is None or not inference_applies(x) or _kernels() is None:
            return self.pool(x)
        k, s, p = params
        size = _kernels().pool_output_size
        n, c, h, w = x.shape
        out = torch.empty(n, c, size(h, k, s, p, self.pool.ceil_mode), size(w, k, s, p, self.pool.ceil_mode),
                          memory_format=torch.channels_last)
        _kernels().max_pool_nhwc(_nhwc(x), _nhwc(out), k, s, p, threads=torch.get_num_threads())
        return out


def _swap_pools(module: nn.Module, fn) -> None:
    for name, child in list(module.named_children()):
        new = fn(child)
        if new is not child:
            setattr(module, name, new)
        elif not isinstance(child, ChannelMaxPool):
            _swap_pools(child, fn)


def fast_eager(module: nn.Module, winograd: bool = True) -> nn.Module:
    """Give every :class:`~detector.googlenet.ConvReLU` in ``module`` a :class:`FastConv` and put every
    ``nn.MaxPool2d`` in a :class:`ChannelMaxPool` (in place; calling it again only switches ``winograd``)."""
    for m in module.modules():
        if isinstance(m, ConvReLU):
            m.fast = FastConv(winograd)
    _swap_pools(module, lambda m: ChannelMaxPool(m) if isinstance(m, nn.MaxPool2d) else m)
    return module


def plain_eager(module: nn.Module) -> nn.Module:
    """Undo :func:`fast_eager` (in place): torch's own modules again."""
    for m in module.modules():
        if isinstance(m, ConvReLU):
            m.fast = None
    _swap_pools(module, lambda m: m.pool if isinstance(m, ChannelMaxPool) else m)
    return module
