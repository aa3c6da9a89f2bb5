"""R-CNN region crops ("warp" and "square"): the same code for training and testing.

R-CNN (``rcnn_im_crop.m``) turns each proposal into a fixed ``S x S`` network input:

1. dilate the box about its centre by ``scale = S / (S - 2p)`` so that, after warping, exactly ``p``
   pixels of context surround the original box (``p = context_pad = 16``, ``S = size = 224``);
   in "square" mode the shorter side is first grown to the longer one;
2. clip the dilated box to the image;
3. resize the clipped content anisotropically (bilinear, no antialiasing) and place it at the offset
   it would have had in the unclipped warp; the part of the dilated box outside the image is the
   mean colour, i.e. zero after mean subtraction.

Here every output pixel centre ``u = j + 0.5`` (``j = 0..S-1``) of the dilated box ``D`` is mapped back
to the continuous image coordinate ``x = D.x1 + u * D.w / S``; samples with ``0 <= x < W`` (the clipped
part) are read bilinearly at pixel-index coordinate ``x - 0.5`` clamped to ``[0, W - 1]``, the others are
zero. This is R-CNN's geometry in continuous coordinates: R-CNN rounds the dilated box and the padding
to whole pixels (offsets of up to half a pixel in the 224 grid) and resizes an integer crop with edge
replication; :func:`warp_region_reference` implements that literal version with ``cv2.resize`` and the
tests check the two agree closely.

Implementation: the image is normalised once (:func:`prepare_image`); each region is then one
``cv2.warpAffine`` (inverse map ``x_src = D.x1 + (j + 0.5) * D.w / S - 0.5``, bilinear, border
replicated) written straight into an NHWC buffer that is returned as an NCHW tensor in channels-last
memory (no copy), and the rows / columns that sample outside the image are zeroed. Vectorised
alternatives sample the very same positions and are kept as ``sampler=``: ``roi_align`` (torchvision,
``aligned=True``, ``sampling_ratio=1``) and ``grid_sample`` (per-box separable grid). Measured on this
machine (one thread, 640 regions, batches of 64): cv2 ~2,000+ regions/s, roi_align ~650, grid_sample
slower still once its output is made contiguous -- whole-tensor passes over ``[N, 3, 224, 224]``
float32 are memory-bound here, so the winner is the one that writes each output value exactly once.
cv2 interpolates with 1/32-pixel fixed-point weights (differences of ~0.1 grey level vs roi_align).

Coordinates: boxes are the library's float32 ``[N, 4]`` 0-based continuous xyxy (detector/boxes.py).
Images are RGB uint8 ``[H, W, 3]``; outputs are float32 NCHW tensors already preprocessed for the
network (channel order, scale, mean, std from the weights' ``Preprocess``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator, Protocol, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .boxes import as_boxes
from .config import WARP_MODES, WarpConfig

__all__ = ["PreprocessLike", "PreparedImage", "prepare_image", "SAMPLERS", "dilated_boxes", "warp_prepared", "warp_regions",
           "iter_warped", "warp_region_reference", "WARP_MODES"]

log = logging.getLogger(__name__)



class PreprocessLike(Protocol):
    """What warping needs from a weights' preprocessing spec (``detector.weights.Preprocess``).

    ``channel_order`` "RGB" | "BGR"; pixel values are first scaled to ``0..scale`` (255 for BVLC, 1 for
    torchvision); then ``(value - mean) / std`` with ``mean`` and ``std`` given in ``channel_order``.
    """

    channel_order: str
    scale: float
    mean: Sequence[float]
    std: Sequence[float]


def _check_cfg(cfg: WarpConfig) -> None:
    if cfg.mode not in WARP_MODES:
        raise ValueError(f"warp.mode must be one of {WARP_MODES}, got {cfg.mode!r}")
    if cfg.size <= 0 or not 0 <= 2 * cfg.context_pad < cfg.size:
        raise ValueError(f"warp: need size > 2 * context_pad >= 0, got size={cfg.size}, "
                         f"context_pad={cfg.context_pad}")


def _normalise(chw: torch.Tensor, pre: PreprocessLike) -> torch.Tensor:
    """``[..., 3, H, W]`` RGB float 0..255 -> network input (channel order, scale, mean, std)."""
    order = str(pre.channel_order).upper()
    if order == "BGR":
        chw = chw.flip(-3)
    elif order != "RGB":
        raise ValueError(f"preprocess.channel_order must be 'RGB' or 'BGR', got {pre.channel_order!r}")
    shape = (3, 1, 1)
    mean = torch.as_tensor(pre.mean, dtype=torch.float32).reshape(shape)
    std = torch.as_tensor(pre.std, dtype=torch.float32).reshape(shape)
    return (chw * (float(pre.scale) / 255.0) - mean) / std


@dataclass(frozen=True, eq=False)
class PreparedImage:
    """An image converted once to network values (channel order, scale, mean, std; the mean is 0).

    ``hwc``: float32 ``[H, W, 3]`` C-contiguous; :meth:`nchw` the same pixels as ``[1, 3, H, W]``.
    """

    hwc: np.ndarray

    @property
    def height(self) -> int:
        return self.hwc.shape[0]

    @property
    def width(self) -> int:
        return self.hwc.shape[1]

    def nchw(self) -> torch.Tensor:
        return torch.from_numpy(self.hwc).permute(2, 0, 1).unsqueeze(0).contiguous()


def prepare_image(image: np.ndarray, pre: PreprocessLike) -> PreparedImage:
    """RGB uint8 ``[H, W, 3]`` -> :class:`PreparedImage` (network-normalised float32, mean -> 0).

    Done once per image; :func:`warp_prepared` then samples any number of regions from it.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
            or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 image [H, W, 3], got "
                         f"{getattr(image, 'dtype', type(image))} {getattr(image, 'shape', '')}")
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
    return PreparedImage(np.ascontiguousarray(_normalise(t, pre).permute(1, 2, 0).numpy()))


def dilated_boxes(boxes: np.ndarray | torch.Tensor, cfg: WarpConfig) -> torch.Tensor:
    """The boxes whose ``S x S`` warp leaves ``context_pad`` pixels of context: float32 ``[N, 4]`` xyxy.

    Dilation about the centre by ``S / (S - 2p)``; "square" mode first makes width = height = the
    longer side (R-CNN ``rcnn_im_crop.m``). Not clipped to the image.
    """
    _check_cfg(cfg)
    b = torch.as_tensor(np.asarray(boxes, np.float32) if not torch.is_tensor(boxes) else boxes,
                        dtype=torch.float32).reshape(-1, 4)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    hw, hh = (b[:, 2] - b[:, 0]) / 2, (b[:, 3] - b[:, 1]) / 2
    if cfg.mode == "square":
        hw = hh = torch.maximum(hw, hh)
    s = cfg.size / (cfg.size - 2 * cfg.context_pad)
    return torch.stack([cx - hw * s, cy - hh * s, cx + hw * s, cy + hh * s], dim=1)


def _validate_boxes(boxes: np.ndarray) -> np.ndarray:
    b = as_boxes(boxes)
    bad = ~np.isfinite(b).all(axis=1) | (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"warp: {int(bad.sum())} box(es) with non-finite or non-positive size, "
                         f"first #{i} = {b[i].tolist()} (xyxy, 0-based)")
    return b


def _inside_ranges(d: np.ndarray, size: int, width: int, height: int) -> np.ndarray:
    """Per box, the output columns ``[c0, c1)`` and rows ``[r0, r1)`` whose samples lie inside the image.

    Output pixel centre ``u = j + 0.5`` samples ``x = D.x1 + u * D.w / S``; it is inside when
    ``0 <= x < W``, i.e. ``j + 0.5 >= -D.x1 * S / D.w`` and ``j + 0.5 < (W - D.x1) * S / D.w``.
    Returns int64 ``[N, 4]`` = ``c0, c1, r0, r1`` (clamped to ``0..S``).
    """
    d = d.astype(np.float64)
    kx = size / (d[:, 2] - d[:, 0])
    ky = size / (d[:, 3] - d[:, 1])
    c0 = np.ceil(-d[:, 0] * kx - 0.5)
    c1 = np.ceil((width - d[:, 0]) * kx - 0.5)
    r0 = np.ceil(-d[:, 1] * ky - 0.5)
    r1 = np.ceil((height - d[:, 1]) * ky - 0.5)
    return np.clip(np.stack([c0, c1, r0, r1], axis=1), 0, size).astype(np.int64)


def _sample_cv2(img: PreparedImage, d: np.ndarray, size: int) -> torch.Tensor:
    """One ``cv2.warpAffine`` per region into an NHWC buffer, returned as an NCHW channels-last view."""
    buf = np.empty((len(d), size, size, 3), np.float32)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    for i, (x1, y1, x2, y2) in enumerate(d.tolist()):
        ax, ay = (x2 - x1) / size, (y2 - y1) / size
        m = np.array([[ax, 0.0, x1 + 0.5 * ax - 0.5], [0.0, ay, y1 + 0.5 * ay - 0.5]], np.float64)
        cv2.warpAffine(img.hwc, m, (size, size), dst=buf[i], flags=flags, borderMode=cv2.BORDER_REPLICATE)
    return torch.from_numpy(buf).permute(0, 3, 1, 2)


def _sample_roi_align(img: PreparedImage, d: np.ndarray, size: int) -> torch.Tensor:
    import torchvision  # here only: importing it pulls in torch._dynamo (~1 s of every tool's and worker's start-up)

    dt = torch.from_numpy(d)
    rois = torch.cat([torch.zeros(len(dt), 1), dt], dim=1)
    return torchvision.ops.roi_align(img.nchw(), rois, output_size=(size, size), spatial_scale=1.0,
                                     sampling_ratio=1, aligned=True)


def _sample_grid(img: PreparedImage, d: np.ndarray, size: int) -> torch.Tensor:
    h, w = img.height, img.width
    dt = torch.from_numpy(d)
    u = torch.arange(size, dtype=torch.float32) + 0.5
    xp = (dt[:, :1] + u[None] * ((dt[:, 2:3] - dt[:, :1]) / size) - 0.5).clamp(0, w - 1)
    yp = (dt[:, 1:2] + u[None] * ((dt[:, 3:4] - dt[:, 1:2]) / size) - 0.5).clamp(0, h - 1)
    gx = xp / max(w - 1, 1) * 2 - 1  # align_corners=True: -1 / +1 are the first / last pixel centres
    gy = yp / max(h - 1, 1) * 2 - 1
    n = len(dt)
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # [N, S, S, 2]
    out = F.grid_sample(img.nchw(), grid.reshape(1, n * size, size, 2), mode="bilinear",
                        padding_mode="border", align_corners=True)  # [1, 3, N*S, S]
    return out.reshape(3, n, size, size).transpose(0, 1)


# All three sample the same positions with one bilinear tap each, clamped at the image border; cv2 is
# the fastest here (docs/sections/detect.md), roi_align / grid_sample are kept for the comparison.
SAMPLERS = {"cv2": _sample_cv2, "roi_align": _sample_roi_align, "grid_sample": _sample_grid}


def warp_prepared(img: PreparedImage, boxes: np.ndarray, cfg: WarpConfig,
                  flip: np.ndarray | bool | None = None, sampler: str = "cv2") -> torch.Tensor:
    """Warp regions of an image from :func:`prepare_image`.

    ``boxes`` float32 ``[N, 4]`` xyxy (0-based continuous; may extend beyond the image; must have
    positive size); ``flip``: bool or bool ``[N]``, mirror those warps horizontally (training
    augmentation; equals warping the mirrored box of the mirrored image).
    Returns float32 ``[N, 3, S, S]`` (NCHW; with the cv2 sampler in channels-last memory format);
    ``N = 0`` gives ``[0, 3, S, S]``.
    """
    _check_cfg(cfg)
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
    b = _validate_boxes(boxes)
    s = cfg.size
    if len(b) == 0:
        return torch.zeros((0, 3, s, s), dtype=torch.float32)
    d = dilated_boxes(b, cfg).numpy()
    out = SAMPLERS[sampler](img, d, s)
    # mean fill: zero the rows / columns that sample outside the image (only boxes that reach out)
    rng = _inside_ranges(d, s, img.width, img.height)
    for i in np.flatnonzero((rng[:, 0] > 0) | (rng[:, 1] < s) | (rng[:, 2] > 0) | (rng[:, 3] < s)):
        c0, c1, r0, r1 = rng[i].tolist()
        o = out[i]
        o[:, :r0] = 0
        o[:, r1:] = 0
        o[:, :, :c0] = 0
        o[:, :, c1:] = 0
    if flip is not None and np.any(flip):
        fl = torch.as_tensor(np.broadcast_to(np.asarray(flip, bool), (len(b),)).copy())
        out[fl] = out[fl].flip(-1)
    return out


def warp_regions(image: np.ndarray, boxes: np.ndarray, cfg: WarpConfig, pre: PreprocessLike,
                 flip: np.ndarray | bool | None = None) -> torch.Tensor:
    """RGB uint8 ``[H, W, 3]`` image + float32 ``[N, 4]`` xyxy boxes -> float32 ``[N, 3, S, S]`` network input."""
    return warp_prepared(prepare_image(image, pre), boxes, cfg, flip=flip)


def iter_warped(img: PreparedImage, boxes: np.ndarray, cfg: WarpConfig,
                batch_size: int) -> Iterator[tuple[slice, torch.Tensor]]:
    """Stream the warps of ``boxes`` in batches (memory bounded by ``batch_size``, not by ``N``).

    Yields ``(slice into boxes, [n, 3, S, S] tensor)``.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    b = as_boxes(boxes)
    for start in range(0, len(b), batch_size):
        sl = slice(start, min(start + batch_size, len(b)))
        yield sl, warp_prepared(img, b[sl], cfg)


def warp_region_reference(image: np.ndarray, box: Sequence[float], cfg: WarpConfig,
                          pre: PreprocessLike) -> torch.Tensor:
    """One region, literally as R-CNN's ``rcnn_im_crop.m`` (integer pixels, ``cv2.resize`` of the crop).

    ``box`` is 0-based continuous xyxy; it is converted to R-CNN's 1-based inclusive pixels, dilated,
    rounded, clipped, resized with ``cv2.INTER_LINEAR`` and pasted at the rounded offset into a zero
    (= mean) ``S x S`` canvas. Returns float32 ``[3, S, S]``. Slow: the test oracle and the naive
    baseline of tools/benchmark.py.
    """
    _check_cfg(cfg)
    h_img, w_img = image.shape[:2]
    size, pad = cfg.size, cfg.context_pad
    x1, y1, x2, y2 = float(box[0]) + 1, float(box[1]) + 1, float(box[2]), float(box[3])  # 1-based incl.
    half_w, half_h = (x2 - x1 + 1) / 2, (y2 - y1 + 1) / 2
    cx, cy = x1 + half_w, y1 + half_h
    if cfg.mode == "square":
        half_w = half_h = max(half_w, half_h)
    scale = size / (size - 2 * pad)
    bx1, by1 = round(cx - half_w * scale), round(cy - half_h * scale)
    bx2, by2 = round(cx + half_w * scale), round(cy + half_h * scale)
    unclipped_w, unclipped_h = bx2 - bx1 + 1, by2 - by1 + 1
    pad_x1, pad_y1 = max(0, 1 - bx1), max(0, 1 - by1)
    bx1, by1, bx2, by2 = max(1, bx1), max(1, by1), min(w_img, bx2), min(h_img, by2)
    sx, sy = size / unclipped_w, size / unclipped_h
    crop_w = round((bx2 - bx1 + 1) * sx)
    crop_h = round((by2 - by1 + 1) * sy)
    pad_x1, pad_y1 = round(pad_x1 * sx), round(pad_y1 * sy)
    crop_w, crop_h = min(crop_w, size - pad_x1), min(crop_h, size - pad_y1)
    out = torch.zeros((3, size, size), dtype=torch.float32)
    if crop_w <= 0 or crop_h <= 0 or bx2 < bx1 or by2 < by1:
        return out
    window = np.ascontiguousarray(image[by1 - 1:by2, bx1 - 1:bx2]).astype(np.float32)
    resized = cv2.resize(window, (crop_w, crop_h), interpolation=cv2.INTER_LINEAR)
    t = _normalise(torch.from_numpy(resized.reshape(crop_h, crop_w, 3)).permute(2, 0, 1), pre)
    out[:, pad_y1:pad_y1 + crop_h, pad_x1:pad_x1 + crop_w] = t
    return out
