"""Drawing labelled detection boxes on an image (PIL only, no display needed).

Boxes are the library's float32 ``[N, 4]`` 0-based continuous xyxy; the image is RGB uint8 ``[H, W, 3]``.
"""
from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .structures import Detections

__all__ = ["class_colour", "draw_detections", "save_detections_image"]


def class_colour(label: int) -> tuple[int, int, int]:
    """A bright colour per class index, stable across runs (golden-ratio hue steps)."""
    r, g, b = colorsys.hsv_to_rgb((label * 0.618033988749895) % 1.0, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(image: np.ndarray, dets: Detections, class_names: Sequence[str],
                    line_width: int | None = None) -> Image.Image:
    """Return a PIL image: ``image`` with one rectangle + "name score" label per detection.

    Highest scores are drawn last (on top).
    """
    img = Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
    draw = ImageDraw.Draw(img)
    lw = line_width or max(2, round(max(img.size) / 250))
    try:
        font = ImageFont.load_default(size=max(8, round(max(img.size) / 40)))
    except TypeError:  # Pillow < 10.1 has no sized default font
        font = ImageFont.load_default()
    for i in np.argsort(dets.scores, kind="stable"):
        x1, y1, x2, y2 = (float(v) for v in dets.boxes[i])
        label = int(dets.labels[i])
        colour = class_colour(label)
        name = class_names[label] if 0 <= label < len(class_names) else str(label)
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=colour, width=lw)
        text = f"{name.split(',')[0]} {float(dets.scores[i]):.2f}"
        tx1, ty1, tx2, ty2 = draw.textbbox((0, 0), text, font=font)
        tw, th = tx2 - tx1, ty2 - ty1
        ty = y1 - th - 4 if y1 - th - 4 >= 0 else y1
        draw.rectangle([x1, ty, x1 + tw + 4, ty + th + 4], fill=colour)
        draw.text((x1 + 2 - tx1, ty + 2 - ty1), text, fill=(0, 0, 0), font=font)
    return img


def save_detections_image(image: np.ndarray, dets: Detections, class_names: Sequence[str],
                          path: str | Path) -> Path:
    """Draw and save (format from the suffix: .jpg / .png ...); returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    out = draw_detections(image, dets, class_names)
    if p.suffix.lower() in (".jpg", ".jpeg"):
        out.save(p, quality=92)
    else:
        out.save(p)
    return p
