"""Reading images robustly: every decodable image becomes ``uint8 [H, W, 3]`` RGB.

Handled: grayscale (L, 1-bit), palette, alpha (RGBA/LA: alpha dropped, composited on black is NOT done --
colour channels are kept as stored), CMYK (converted by Pillow), 16-bit and 32-bit integer (scaled to
0..255 by their maximum possible value), float images. EXIF orientation is deliberately not applied:
annotation files (VOC, ILSVRC, COCO) refer to the stored pixel grid.

Unreadable, truncated or empty files raise :class:`ImageReadError` naming the path.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["ImageReadError", "read_image", "to_rgb_uint8", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".JPEG")


class ImageReadError(OSError):
    """An image file that cannot be decoded."""


def to_rgb_uint8(img: Image.Image) -> np.ndarray:
    """Convert any PIL image to ``uint8 [H, W, 3]`` RGB."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(img, dtype=np.uint16).astype(np.float32) / 257.0
        arr = np.repeat(arr[..., None], 3, axis=2)
    elif mode == "I":
        raw = np.asarray(img, dtype=np.int64)
        top = 65535.0 if raw.max(initial=0) > 255 else 255.0
        arr = np.repeat((np.clip(raw, 0, top) / top * 255.0)[..., None], 3, axis=2)
    elif mode == "F":
        raw = np.asarray(img, dtype=np.float32)
        top = 1.0 if raw.max(initial=0) <= 1.0 else 255.0
        arr = np.repeat((np.clip(raw, 0, top) / top * 255.0)[..., None], 3, axis=2)
    else:
        arr = np.asarray(img.convert("RGB"))
    out = np.ascontiguousarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
    if out.ndim != 3 or out.shape[2] != 3:
        raise ImageReadError(f"unexpected decoded shape {out.shape}")
    return out


def read_image(path: str | Path) -> np.ndarray:
    """Decode ``path`` to ``uint8 [H, W, 3]`` RGB or raise :class:`ImageReadError` naming it."""
    p = Path(path)
    if not p.is_file():
        raise ImageReadError(f"{p}: no such image file")
    try:
        with Image.open(p) as img:
            img.load()
            arr = to_rgb_uint8(img)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageReadError(f"{p}: cannot read image ({type(e).__name__}: {e})") from None
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageReadError(f"{p}: image has zero size {arr.shape[:2]}")
    return arr
