"""PASCAL-VOC-style XML (also ILSVRC DET) -> boxes in the library convention, with counted skips."""
from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..boxes import from_one_based_inclusive
from ..structures import DatasetError

log = logging.getLogger(__name__)


@dataclass
class SkipCounter:
    """Counts records/boxes dropped under ``skip_bad`` so loaders can report them at the end."""

    boxes: int = 0
    images: int = 0
    reasons: list[str] = field(default_factory=list)

    def add(self, msg: str, image: bool = False) -> None:
        if image:
            self.images += 1
        else:
            self.boxes += 1
        self.reasons.append(msg)
        log.warning("skipped: %s", msg)

    def report(self, what: str) -> None:
        if self.boxes or self.images:
            log.warning("%s: skipped %d bad box(es) and %d image(s)", what, self.boxes, self.images)


@dataclass
class XmlObject:
    name: str
    box: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax as in the file (1-based inclusive)
    difficult: bool


@dataclass
class XmlAnnotation:
    filename: str
    width: int
    height: int
    objects: list[XmlObject]


def _num(node: ET.Element, tag: str, path: Path) -> float:
    el = node.find(tag)
    if el is None or el.text is None:
        raise DatasetError(f"{path}: <{tag}> missing in <{node.tag}>")
    try:
        return float(el.text.strip())
    except ValueError:
        raise DatasetError(f"{path}: <{tag}> is not a number: {el.text!r}") from None


def parse_xml(path: Path) -> XmlAnnotation:
    """Parse one VOC/ILSVRC XML file; malformed content raises :class:`DatasetError` naming the file."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise DatasetError(f"{path}: malformed XML ({e})") from None
    size = root.find("size")
    if size is None:
        raise DatasetError(f"{path}: <size> missing")
    w, h = int(_num(size, "width", path)), int(_num(size, "height", path))
    fn = root.findtext("filename", default=path.stem).strip()
    objs = []
    for obj in root.findall("object"):
        name = (obj.findtext("name") or "").strip()
        bb = obj.find("bndbox")
        if not name or bb is None:
            raise DatasetError(f"{path}: <object> without <name> or <bndbox>")
        box = tuple(_num(bb, t, path) for t in ("xmin", "ymin", "xmax", "ymax"))
        diff = (obj.findtext("difficult") or "0").strip() in ("1", "true")
        objs.append(XmlObject(name, box, diff))
    return XmlAnnotation(fn, w, h, objs)


def objects_to_arrays(ann: XmlAnnotation, path: Path, class_index: dict[str, int], skip: SkipCounter | None,
                      clip_out_of_bounds: bool = True, allow_single_pixel: bool = False):
    """Boxes (library xyxy), labels and ignore flags of ``ann``; bad boxes raise or are counted skips.

    A box is bad when its class is unknown, it has zero or negative size, or it lies outside the image.
    Zero size is judged on the file's numbers: ``xmax <= xmin`` or ``ymax <= ymin`` is degenerate (e.g. BCCD's
    point annotations ``504 337 504 337``), unless ``allow_single_pixel`` (ILSVRC: the devkit accepts a
    one-pixel-wide inclusive box, so the ground truth is kept exactly as annotated).
    Boxes that only stick out of the image are clipped (counted in the log at debug level).
    """
    boxes, labels, ignore = [], [], []
    for o in ann.objects:
        problem = None
        if o.name not in class_index:
            problem = f"{path}: unknown class {o.name!r} (known: {len(class_index)} classes)"
        b = from_one_based_inclusive(np.array(o.box))[0]
        x0, y0, x1, y1 = o.box
        ok = (x1 >= x0 and y1 >= y0) if allow_single_pixel else (x1 > x0 and y1 > y0)
        if problem is None and not ok:
            problem = f"{path}: zero-size box {o.box} of {o.name!r}"
        if problem is None and (b[0] >= ann.width or b[1] >= ann.height or b[2] <= 0 or b[3] <= 0):
            problem = f"{path}: box {o.box} of {o.name!r} lies outside the {ann.width}x{ann.height} image"
        if problem:
            if skip is None:
                raise DatasetError(problem + " (pass skip_bad / --skip-bad to drop such boxes with a warning)")
            skip.add(problem)
            continue
        if clip_out_of_bounds:
            b = np.array([max(b[0], 0), max(b[1], 0), min(b[2], ann.width), min(b[3], ann.height)], np.float32)
        boxes.append(b)
        labels.append(class_index[o.name])
        ignore.append(o.difficult)
    arr = np.array(boxes, np.float32).reshape(-1, 4)
    return arr, np.array(labels, np.int64), np.array(ignore, bool)


def write_xml(path: Path, filename: str, width: int, height: int, objects: list[tuple[str, np.ndarray, bool]]) -> None:
    """Write a VOC XML (boxes given in library xyxy, written 1-based inclusive): for round-trip tests/tools."""
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    for tag, v in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(v)
    for name, box, difficult in objects:
        o = ET.SubElement(root, "object")
        ET.SubElement(o, "name").text = name
        ET.SubElement(o, "difficult").text = "1" if difficult else "0"
        bb = ET.SubElement(o, "bndbox")
        x1, y1, x2, y2 = (float(v) for v in box)
        for tag, v in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
            ET.SubElement(bb, tag).text = f"{v:g}"
    ET.ElementTree(root).write(path)
