"""Our detections JSON: what ``tools/detect.py --json`` writes and ``tools/evaluate.py voc/coco`` reads.

Format (version 1)::

    {"format": "googlenet-rcnn-detections", "version": 1,
     "box_convention": "x1 y1 x2 y2, 0-based continuous pixels, width = x2 - x1 (VOC/ILSVRC xmin = x1 + 1, xmax = x2)",
     "classes": ["n02672831", ...], "class_names": ["accordion", ...],
     "images": [{"image_id": "ILSVRC2012_val_00000001", "path": "...", "width": 500, "height": 375,
                 "detections": [{"class": "n02672831", "class_name": "accordion", "score": 0.91,
                                 "box": [x1, y1, x2, y2]}]}]}

``class`` is the class identifier (WNID, VOC name, COCO category id as a string), ``class_name`` the readable
name. The library convention of :mod:`detector.boxes` is used as is: no conversion on read or write.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..structures import DatasetError, Detections

__all__ = ["FORMAT", "VERSION", "DetectionsFile", "ImageDetections", "write_detections_json",
           "read_detections_json", "relabel"]

FORMAT = "googlenet-rcnn-detections"
VERSION = 1
BOX_CONVENTION = ("x1 y1 x2 y2, 0-based continuous pixels, width = x2 - x1 "
                  "(VOC/ILSVRC xmin = x1 + 1, xmax = x2)")


@dataclass
class ImageDetections:
    image_id: str
    path: str | None
    width: int
    height: int
    detections: Detections  # labels index DetectionsFile.classes


@dataclass
class DetectionsFile:
    classes: list[str]
    class_names: list[str]
    images: list[ImageDetections]

    def by_image(self) -> dict[str, Detections]:
        return {im.image_id: im.detections for im in self.images}


def write_detections_json(path: Path, classes, class_names, images: list[ImageDetections]) -> None:
    """Write the file (scores and coordinates rounded to 6 decimals after the point)."""
    out = []
    for im in images:
        d = im.detections
        out.append({"image_id": im.image_id, "path": None if im.path is None else str(im.path),
                    "width": int(im.width), "height": int(im.height),
                    "detections": [{"class": classes[int(lab)], "class_name": class_names[int(lab)],
                                    "score": round(float(s), 6), "box": [round(float(x), 6) for x in b]}
                                   for b, s, lab in zip(d.boxes, d.scores, d.labels)]})
    doc = {"format": FORMAT, "version": VERSION, "box_convention": BOX_CONVENTION,
           "classes": [str(c) for c in classes], "class_names": [str(n) for n in class_names], "images": out}
    Path(path).write_text(json.dumps(doc, indent=1))


def _bad(path, where: str, what: str) -> DatasetError:
    return DatasetError(f"{path}: {where}: {what}")


def read_detections_json(path: Path) -> DetectionsFile:
    """Read and check a detections JSON; any malformed part raises naming the file and the entry."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{p}: detections file not found")
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{p}: malformed JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DatasetError(f"{p}: not a {FORMAT} file (expected a JSON object with \"format\": \"{FORMAT}\")")
    if doc.get("version") != VERSION:
        raise DatasetError(f"{p}: version {doc.get('version')!r} not supported (expected {VERSION})")
    classes, names = doc.get("classes"), doc.get("class_names")
    if not isinstance(classes, list) or not isinstance(names, list) or len(classes) != len(names):
        raise DatasetError(f"{p}: \"classes\" and \"class_names\" must be lists of equal length")
    index = {c: i for i, c in enumerate(classes)}
    images = []
    for i, im in enumerate(doc.get("images", [])):
        try:
            where = f"images[{i}] ({im.get('image_id')})"
            boxes, scores, labels = [], [], []
            for j, det in enumerate(im["detections"]):
                if det["class"] not in index:
                    raise _bad(p, f"{where}.detections[{j}]", f"unknown class {det['class']!r}")
                box = [float(x) for x in det["box"]]
                if len(box) != 4 or not np.isfinite(box).all():
                    raise _bad(p, f"{where}.detections[{j}]", f"box must be 4 finite numbers, got {det['box']}")
                boxes.append(box)
                scores.append(float(det["score"]))
                labels.append(index[det["class"]])
            images.append(ImageDetections(str(im["image_id"]), im.get("path"), int(im["width"]),
                                          int(im["height"]), Detections(np.array(boxes, np.float32).reshape(-1, 4),
                                                                        scores, labels)))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            if isinstance(e, DatasetError):
                raise
            raise _bad(p, f"images[{i}]", f"malformed entry ({type(e).__name__}: {e})") from None
    return DetectionsFile([str(c) for c in classes], [str(n) for n in names], images)


def relabel(f: DetectionsFile, classes: tuple[str, ...] | list[str], source: Path | str = "") -> dict[str, Detections]:
    """The file's detections with labels re-indexed into ``classes`` (a dataset's); a class of the file
    missing from ``classes`` raises naming it."""
    pos = {c: i for i, c in enumerate(classes)}
    missing = [c for c in f.classes if c not in pos]
    if missing:
        raise DatasetError(f"{source}: classes {missing[:5]} are not among the dataset's {list(classes)[:10]}")
    lut = np.array([pos[c] for c in f.classes], np.int64)
    return {im.image_id: Detections(im.detections.boxes, im.detections.scores,
                                    lut[im.detections.labels] if len(im.detections) else im.detections.labels)
            for im in f.images}
