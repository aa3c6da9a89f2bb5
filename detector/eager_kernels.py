"""numba kernels for the eager fp32 classifier's inference path (:mod:`detector.fast_eager`), channels-last.

* :func:`max_pool_nhwc`: max pooling of a float32 ``[N, H, W, C]`` array, square window, any stride and
  padding, the output size given by the caller (torch's floor or ceil mode). A max of the same numbers, so
  exactly torch's result; 2-4x faster than torch's channels-last max pooling at GoogLeNet's shapes (README
  "Speed").
* :func:`winograd_input` / :func:`winograd_output`: the two transforms of Winograd's minimal filtering
  F(4x4, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016) for a 3x3 convolution
  with stride 1 and padding 1. Each 4x4 block of outputs is computed from a 6x6 tile of the input as
  ``A^T [(G g G^T) . (B^T d B)] A``: 36 multiplications per tile and channel pair instead of 144. The input
  transform writes ``B^T d B`` of every tile, the products are 36 matrix products (one grouped 1x1
  convolution, oneDNN), and the output transform applies ``A^T . A``, the bias and the ReLU.

Compiled on first use and cached by numba next to this file when it is writable, as
:mod:`detector.lrn_kernels`; ``threads`` as there. The first compilation of the three kernels takes ~14 s on
this project's 2-core machine (an empty ``NUMBA_CACHE_DIR``), loading them from the cache 0.4 s.
"""
from __future__ import annotations

import numpy as np

from .lrn_kernels import _FASTMATH, _threads  # numba, or the clear ImportError of lrn_kernels
from numba import njit, prange  # noqa: E402

__all__ = ["max_pool_nhwc", "winograd_input", "winograd_output", "WINOGRAD_G", "pool_output_size"]

# F(4x4, 3x3): the filter transform G (6x3); B^T and A^T are written out in the kernels below
WINOGRAD_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                       [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])


def pool_output_size(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool) -> int:
    """torch's ``max_pool2d`` output size along one axis (ceil mode: a last window must start inside the
    input or its left padding)."""
    span = size + 2 * padding - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


@njit(parallel=True, fastmath=_FASTMATH, cache=True)
def _max_pool(x, out, k, s, p):  # pragma: no cover - compiled
    n, h, w, c = x.shape
    oh, ow = out.shape[1], out.shape[2]
    for task in prange(n * oh):
        b, i = task // oh, task % oh
        r0, r1 = max(i * s - p, 0), min(i * s - p + k, h)
        col = np.empty((w, c), np.float32)  # the window's rows reduced to one, then the columns
        col[:, :] = x[b, r0]
        for r in range(r0 + 1, r1):
            xr = x[b, r]
            for j in range(w):
                cj, xj = col[j], xr[j]
                for ch in range(c):
                    cj[ch] = max(cj[ch], xj[ch])
        o = out[b, i]
        for j in range(ow):
            c0, c1 = max(j * s - p, 0), min(j * s - p + k, w)
            oj = o[j]
            oj[:] = col[c0]
            for jj in range(c0 + 1, c1):
                cj = col[jj]
                for ch in range(c):
                    oj[ch] = max(oj[ch], cj[ch])


def max_pool_nhwc(x: np.ndarray, out: np.ndarray, kernel: int, stride: int, padding: int,
                  threads: int = 0) -> np.ndarray:
    """Max pooling of float32 ``x`` ``[N, H, W, C]`` into ``out`` ``[N, OH, OW, C]`` (C-contiguous; padding
    never wins, as torch's -inf padding); returns ``out``."""
    if x.ndim != 4 or x.dtype != np.float32 or out.dtype != np.float32 or out.shape[::3] != x.shape[::3]:
        raise ValueError(f"max_pool_nhwc: float32 [N, H, W, C] in and out, got {x.dtype} {x.shape}, "
                         f"{out.dtype} {out.shape}")
    if padding * 2 > kernel or min(out.shape[1:3]) < 1:
        raise ValueError(f"max_pool_nhwc: kernel {kernel}, padding {padding}, output {out.shape}")
    _threads(threads)
    _max_pool(np.ascontiguousarray(x), out, kernel, stride, padding)
    return out


@njit(fastmath=_FASTMATH, cache=True, inline="always")
def _bt(d0, d1, d2, d3, d4, d5, o0, o1, o2, o3, o4, o5, c):  # pragma: no cover - compiled
    """``o = B^T d`` for six channel vectors: F(4x4, 3x3)'s input transform along one axis."""
    for ch in range(c):
        o0[ch] = 4 * d0[ch] - 5 * d2[ch] + d4[ch]
        o1[ch] = -4 * (d1[ch] + d2[ch]) + d3[ch] + d4[ch]
        o2[ch] = 4 * (d1[ch] - d2[ch]) - d3[ch] + d4[ch]
        o3[ch] = -2 * (d1[ch] - d3[ch]) - d2[ch] + d4[ch]
        o4[ch] = 2 * (d1[ch] - d3[ch]) - d2[ch] + d4[ch]
        o5[ch] = 4 * d1[ch] - 5 * d3[ch] + d5[ch]


@njit(parallel=True, fastmath=_FASTMATH, cache=True)
def _winograd_input(x, v):  # pragma: no cover - compiled
    n, h, w, c = x.shape
    th, tw = v.shape[1], v.shape[2]
    wp = tw * 4 + 2
    for task in prange(n * th):
        b, ti = task // th, task % th
        rows = np.zeros((6, wp, c), np.float32)  # the tile row's 6 input rows, zero-padded
        for i in range(6):
            r = ti * 4 - 1 + i
            if 0 <= r < h:
                rows[i, 1:w + 1] = x[b, r]
        t = np.empty((6, wp, c), np.float32)  # B^T applied down the rows
        for col in range(wp):
            d0, d1, d2, d3, d4, d5 = rows[0, col], rows[1, col], rows[2, col], rows[3, col], rows[4, col], \
                rows[5, col]
            _bt(d0, d1, d2, d3, d4, d5, t[0, col], t[1, col], t[2, col], t[3, col], t[4, col], t[5, col], c)
        for tj in range(tw):  # ... and B along each tile's columns
            vo = v[b, ti, tj]
            for a in range(6):
                j = 4 * tj
                e0, e1, e2, e3, e4, e5 = t[a, j], t[a, j + 1], t[a, j + 2], t[a, j + 3], t[a, j + 4], t[a, j + 5]
                _bt(e0, e1, e2, e3, e4, e5, vo[a * 6], vo[a * 6 + 1], vo[a * 6 + 2], vo[a * 6 + 3], vo[a * 6 + 4],
                    vo[a * 6 + 5], c)


@njit(parallel=True, fastmath=_FASTMATH, cache=True)
def _winograd_output(m, bias, y, relu):  # pragma: no cover - compiled
    n, h, w, k = y.shape
    th, tw = m.shape[1], m.shape[2]
    zero = np.float32(0)
    for task in prange(n * th):
        b, ti = task // th, task % th
        t = np.empty((6, 4, k), np.float32)  # A^T applied along each row of the 6x6 products
        s = np.empty((4, k), np.float32)
        for tj in range(tw):
            mo = m[b, ti, tj]
            for a in range(6):
                m0, m1, m2, m3, m4, m5 = mo[a * 6], mo[a * 6 + 1], mo[a * 6 + 2], mo[a * 6 + 3], mo[a * 6 + 4], \
                    mo[a * 6 + 5]
                q0, q1, q2, q3 = t[a, 0], t[a, 1], t[a, 2], t[a, 3]
                for ch in range(k):
                    q0[ch] = m0[ch] + m1[ch] + m2[ch] + m3[ch] + m4[ch]
                    q1[ch] = m1[ch] - m2[ch] + 2 * (m3[ch] - m4[ch])
                    q2[ch] = m1[ch] + m2[ch] + 4 * (m3[ch] + m4[ch])
                    q3[ch] = m1[ch] - m2[ch] + 8 * (m3[ch] - m4[ch]) + m5[ch]
            for q in range(4):  # ... then down each output column, with the bias and the ReLU
                col = tj * 4 + q
                if col >= w:
                    break
                s0, s1, s2, s3, s4, s5 = t[0, q], t[1, q], t[2, q], t[3, q], t[4, q], t[5, q]
                r0, r1, r2, r3 = s[0], s[1], s[2], s[3]
                for ch in range(k):
                    bc = bias[ch]
                    r0[ch] = s0[ch] + s1[ch] + s2[ch] + s3[ch] + s4[ch] + bc
                    r1[ch] = s1[ch] - s2[ch] + 2 * (s3[ch] - s4[ch]) + bc
                    r2[ch] = s1[ch] + s2[ch] + 4 * (s3[ch] + s4[ch]) + bc
                    r3[ch] = s1[ch] - s2[ch] + 8 * (s3[ch] - s4[ch]) + s5[ch] + bc
                for p in range(min(4, h - ti * 4)):
                    o, rp = y[b, ti * 4 + p, col], s[p]
                    if relu:
                        for ch in range(k):
                            o[ch] = max(rp[ch], zero)
                    else:
                        o[:] = rp


def winograd_input(x: np.ndarray, v: np.ndarray, threads: int = 0) -> np.ndarray:
    """``B^T d B`` of every 6x6 input tile (stride 4, zero padding 1) of float32 ``x`` ``[N, H, W, C]``,
    into ``v`` ``[N, ceil(H / 4), ceil(W / 4), 36, C]`` (C-contiguous); returns ``v``."""
    n, h, w, c = x.shape
    if x.dtype != np.float32 or v.dtype != np.float32 or v.shape != (n, -(-h // 4), -(-w // 4), 36, c) \
            or not v.flags.c_contiguous:
        raise ValueError(f"winograd_input: x float32 [N, H, W, C], v [N, H/4, W/4, 36, C]; got {x.dtype} "
                         f"{x.shape}, {v.dtype} {v.shape}")
    _threads(threads)
    _winograd_input(np.ascontiguousarray(x), v)
    return v


def winograd_output(m: np.ndarray, bias: np.ndarray, y: np.ndarray, relu: bool, threads: int = 0) -> np.ndarray:
    """``A^T M A + bias`` (then ReLU if ``relu``) of the products ``m`` ``[N, TH, TW, 36, K]`` into float32
    ``y`` ``[N, H, W, K]`` (C-contiguous, ``TH = ceil(H / 4)``); returns ``y``."""
    n, h, w, k = y.shape
    if m.dtype != np.float32 or y.dtype != np.float32 or m.shape != (n, -(-h // 4), -(-w // 4), 36, k) \
            or bias.shape != (k,) or not y.flags.c_contiguous:
        raise ValueError(f"winograd_output: m [N, H/4, W/4, 36, K], bias [K], y float32 [N, H, W, K]; got "
                         f"{m.shape}, {bias.shape}, {y.dtype} {y.shape}")
    _threads(threads)
    _winograd_output(np.ascontiguousarray(m), np.ascontiguousarray(bias, np.float32), y, relu)
    return y
