"""GoogLeNet's local response normalisation as one fused, channels-last CPU kernel (numba).

``b_c = a_c * (k + alpha / n * sum_{c' = c - n//2 .. c + (n-1)//2} a_{c'}^2) ^ -beta`` (torch's and Caffe's
LRN across channels), for ``[N, H, W, C]`` arrays: one pass over the data instead of the seven ONNX
operators (square, band product, add, two square roots, two divisions) ONNX Runtime runs one after another,
each reading and writing the whole fp32 activation (on the int8 graph those steps, with the dequantisation
feeding them, were ~40% of the time: README "Speed").

* :func:`lrn_nhwc`: fp32 in, fp32 out (the ONNX fp32 graph's LRN).
* :func:`lrn_nhwc_u8`: uint8 in, uint8 out, for the int8 graph: the input is dequantised with the graph's
  own scale/zero point, the window sums of squares are exact integers, the LRN runs in fp32 and the output
  is quantised with the scale/zero point the graph quantises the LRN's output with, rounding half to even
  like ONNX's QuantizeLinear. So the numbers are the int8 graph's own, to fp32 rounding (a value lying on a
  rounding boundary may land one step away).

``beta == 0.75`` (GoogLeNet's) is computed as ``rsqrt(t) * sqrt(rsqrt(t))``, any other beta with ``pow``.
``out``: an array to write into, reused across batches by the caller: at GoogLeNet's norm2 (38 MB at batch 16)
a fresh array's page faults cost twice the LRN itself. Not the input itself: numba's loops then fall back to
scalar code (measured 2x slower).
Kernels are compiled on first use (about a second each) and cached by numba next to this file when it
is writable. ``threads`` sets numba's thread count for the call (0: all of numba's threads).
"""
from __future__ import annotations

import functools
import sys

import numpy as np

try:
    import numba
    from numba import njit, prange
except ImportError as e:  # pragma: no cover - numba is a dependency
    raise ImportError("the fused LRN kernel needs numba (a dependency of this package): pip install -e .") from e

__all__ = ["lrn_nhwc", "lrn_nhwc_u8"]

# Every fast-math flag except reassociation, which would fold away the (v + 1.5 * 2^23) - 1.5 * 2^23
# round-half-to-even below; float32 throughout (a Python float constant would promote the loop to float64).
_FASTMATH = {"nnan", "ninf", "nsz", "arcp", "contract", "afn"}
_PIXELS_PER_TASK = 64


@njit(fastmath=_FASTMATH, cache=True, inline="always")
def _window_sums(sq, s, n, channels):  # pragma: no cover - compiled
    """``s[c] = sq[c] + sq[c + 1] + ... + sq[c + n - 1]``, added left to right (fp32: both kernels' sums;
    exact in the uint8 kernel, whose squares are integers)."""
    if n == 5:  # GoogLeNet's: one pass
        w0, w1, w2, w3, w4 = sq[0:channels], sq[1:channels + 1], sq[2:channels + 2], sq[3:channels + 3], \
            sq[4:channels + 4]
        for c in range(channels):
            s[c] = w0[c] + w1[c] + w2[c] + w3[c] + w4[c]
    else:
        s[:] = 0
        for j in range(n):
            w = sq[j:j + channels]
            for c in range(channels):
                s[c] += w[c]


# Each prange task owns its scratch rows; ``mid`` is the squares' view between the zero pads of the window's
# half-widths (slices, not ``sq[c + lo]``: the offset index made LLVM emit scatter instructions, 2x slower).
@njit(parallel=True, fastmath=_FASTMATH, cache=True)
def _lrn_f32(x, out, n, scale, k, beta):  # pragma: no cover - compiled
    pixels, channels = x.shape
    lo = n // 2
    one = np.float32(1.0)
    for task in prange((pixels + _PIXELS_PER_TASK - 1) // _PIXELS_PER_TASK):
        sq = np.zeros(channels + n - 1, np.float32)
        mid = sq[lo:lo + channels]
        s = np.empty(channels, np.float32)
        for p in range(task * _PIXELS_PER_TASK, min(pixels, (task + 1) * _PIXELS_PER_TASK)):
            xp = x[p]
            for c in range(channels):
                mid[c] = xp[c] * xp[c]
            _window_sums(sq, s, n, channels)
            op = out[p]
            if beta == 0.75:
                for c in range(channels):
                    r = one / np.sqrt(k + scale * s[c])
                    op[c] = xp[c] * r * np.sqrt(r)
            else:
                for c in range(channels):
                    op[c] = xp[c] * (k + scale * s[c]) ** -beta


@njit(parallel=True, fastmath=_FASTMATH, cache=True)
def _lrn_u8(q, out, n, scale, k, beta, sx, zx, sy, zy):  # pragma: no cover - compiled
    pixels, channels = q.shape
    lo = n // 2
    one = np.float32(1.0)
    magic = np.float32(12582912.0)  # 1.5 * 2^23: (v + magic) - magic rounds v half to even
    low, high = np.float32(0) - np.float32(zy), np.float32(255) - np.float32(zy)
    zxf, zyf = np.float32(zx), np.float32(zy)
    s2 = scale * sx * sx  # alpha / n times the square of the input's scale: the sums stay integers
    for task in prange((pixels + _PIXELS_PER_TASK - 1) // _PIXELS_PER_TASK):
        # integers held in float32, exactly: |q - zx| <= 255, so the squares and sums of up to 258 of them
        # stay below 2^24 (lrn_nhwc_u8 checks the size); float32 keeps the loops free of integer widening
        sq = np.zeros(channels + n - 1, np.float32)
        mid = sq[lo:lo + channels]
        s = np.empty(channels, np.float32)
        xs = np.empty(channels, np.float32)
        f = np.empty(channels, np.float32)
        for p in range(task * _PIXELS_PER_TASK, min(pixels, (task + 1) * _PIXELS_PER_TASK)):
            qp = q[p]
            for c in range(channels):
                v = np.float32(qp[c]) - zxf
                xs[c] = v * sx
                mid[c] = v * v
            _window_sums(sq, s, n, channels)
            if beta == 0.75:
                for c in range(channels):
                    r = one / np.sqrt(k + s2 * s[c])
                    f[c] = r * np.sqrt(r)
            else:
                for c in range(channels):
                    f[c] = (k + s2 * s[c]) ** -beta
            op = out[p]
            for c in range(channels):
                v = xs[c] * f[c] / sy
                v = (v + magic) - magic
                op[c] = np.uint8(np.int32(min(max(v, low), high) + zyf))


def _check(x: np.ndarray, dtype, size: int, out: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if x.ndim != 4 or x.dtype != dtype:
        raise ValueError(f"LRN kernel: expected a 4-d [N, H, W, C] {np.dtype(dtype).name} array, got "
                         f"{x.dtype} {x.shape}")
    if size < 1:
        raise ValueError(f"LRN size must be >= 1, not {size}")
    x = np.ascontiguousarray(x)
    if out is None:
        return x, np.empty_like(x)
    if out.shape != x.shape or out.dtype != x.dtype or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"LRN kernel: out must be a writeable C-contiguous {x.dtype} {x.shape} array, got "
                         f"{out.dtype} {out.shape}")
    if np.shares_memory(x, out):
        raise ValueError("LRN kernel: out must not overlap the input")
    return x, out


@functools.cache
def _launch() -> None:
    """Start numba's threading layer once, keeping torch's thread count. torch's wheel ships ``libgomp.so.1``,
    so numba's OpenMP layer runs on the same OpenMP runtime as torch, and starting it sets that runtime's
    thread count to ``NUMBA_NUM_THREADS`` (all cores): after the first kernel call a process limited to one
    thread (``--threads 1``, each image worker) ran torch on every core, e.g. two image workers of torch_int8
    at 56-58 regions/s each instead of ~100. torch is only consulted when the process has imported it."""
    torch = sys.modules.get("torch")
    keep = torch.get_num_threads() if torch is not None else None
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)  # launches the layer
    if keep is not None:
        torch.set_num_threads(keep)


def _threads(threads: int) -> None:
    _launch()
    numba.set_num_threads(threads if 0 < threads <= numba.config.NUMBA_NUM_THREADS
                          else numba.config.NUMBA_NUM_THREADS)


def lrn_nhwc(x: np.ndarray, size: int, alpha: float, beta: float, k: float, threads: int = 0,
             out: np.ndarray | None = None) -> np.ndarray:
    """LRN across the last axis of ``x`` (float32 ``[N, H, W, C]``), written to ``out`` (a new array when
    None) and returned."""
    x, out = _check(x, np.float32, size, out)
    _threads(threads)
    c = x.shape[-1]
    _lrn_f32(x.reshape(-1, c), out.reshape(-1, c), size, np.float32(alpha / size), np.float32(k),
             np.float32(beta))
    return out


def lrn_nhwc_u8(q: np.ndarray, size: int, alpha: float, beta: float, k: float, in_scale: float,
                in_zero: int, out_scale: float, out_zero: int, threads: int = 0,
                out: np.ndarray | None = None) -> np.ndarray:
    """LRN of the uint8 ``[N, H, W, C]`` ``q`` (value ``(q - in_zero) * in_scale``), quantised to uint8 with
    ``out_scale`` / ``out_zero``: ``clip(round_half_even(lrn / out_scale) + out_zero, 0, 255)``, written to
    ``out`` (a new array when None) and returned."""
    q, out = _check(q, np.uint8, size, out)
    if size > 258:
        raise ValueError(f"LRN kernel: uint8 LRN size must be <= 258 (exact float32 window sums), not {size}")
    if not (in_scale > 0 and out_scale > 0):
        raise ValueError(f"LRN kernel: quantisation scales must be > 0 (got {in_scale}, {out_scale})")
    _threads(threads)
    c = q.shape[-1]
    _lrn_u8(q.reshape(-1, c), out.reshape(-1, c), size, np.float32(alpha / size), np.float32(k),
            np.float32(beta), np.float32(in_scale), np.int32(in_zero), np.float32(out_scale), np.int32(out_zero))
    return out
