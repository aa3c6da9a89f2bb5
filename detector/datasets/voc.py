"""PASCAL VOC-format datasets: XML per image + an image-set file; ``difficult`` objects are kept with
``ignore=True`` (neither a hit nor a miss in VOC evaluation).

Folder names differ between datasets (VOC/BCCD: ``JPEGImages`` + ``Annotations`` + ``ImageSets/Main``;
raccoon: ``images`` + ``annotations`` and no image sets), so every folder can be given explicitly. The class
list is given, or else the sorted set of names found in the split's annotations.
"""
from __future__ import annotations

import logging
from pathlib import Path

from ..structures import Dataset, DatasetError, ImageRecord
from .xml_common import SkipCounter, objects_to_arrays, parse_xml

__all__ = ["load_voc", "read_split"]

log = logging.getLogger(__name__)
_EXTS = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG", ".bmp")


def read_split(path: Path) -> list[str]:
    """Image stems, one per line (a second column, as in VOC's per-class files, is ignored)."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{p}: split file not found")
    return [line.split()[0] for line in p.read_text().splitlines() if line.strip()]


def _find_image(images_dir: Path, stem: str, filename: str) -> Path | None:
    cand = images_dir / filename
    if filename and cand.is_file():
        return cand
    return next((images_dir / f"{stem}{e}" for e in _EXTS if (images_dir / f"{stem}{e}").is_file()), None)


def load_voc(root: Path | None = None, split: str = "test", images_dir: Path | None = None,
             annotations_dir: Path | None = None, split_file: Path | None = None,
             classes: list[str] | None = None, skip_bad: bool = False, name: str = "voc") -> Dataset:
    """Records of one split. Defaults: ``root/JPEGImages``, ``root/Annotations``,
    ``root/ImageSets/Main/<split>.txt``; without any split file, every XML in the annotation folder."""
    root = Path(root) if root is not None else None
    if images_dir is None and root is None:
        raise DatasetError("VOC: give --root or --images-dir/--annotations-dir")
    images_dir = Path(images_dir) if images_dir is not None else root / "JPEGImages"
    ann_dir = Path(annotations_dir) if annotations_dir is not None else root / "Annotations"
    for d in (images_dir, ann_dir):
        if not d.is_dir():
            raise DatasetError(f"{d}: folder not found")
    if split_file is None and root is not None and (root / "ImageSets" / "Main" / f"{split}.txt").is_file():
        split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    stems = read_split(split_file) if split_file is not None else sorted(p.stem for p in ann_dir.glob("*.xml"))
    if not stems:
        raise DatasetError(f"{split_file or ann_dir}: no images in the split")
    skip = SkipCounter() if skip_bad else None
    anns = {}
    for stem in stems:
        xml = ann_dir / f"{stem}.xml"
        try:
            if not xml.is_file():
                raise DatasetError(f"{xml}: annotation missing for image {stem}")
            anns[stem] = (xml, parse_xml(xml))
        except DatasetError as e:
            if skip is None:
                raise
            skip.add(str(e), image=True)
    if classes is None:
        classes = sorted({o.name for _, a in anns.values() for o in a.objects})
        log.info("%s: classes from the annotations: %s", name, classes)
    class_index = {c: i for i, c in enumerate(classes)}
    records = []
    for stem, (xml, ann) in anns.items():
        try:
            boxes, labels, ignore = objects_to_arrays(ann, xml, class_index, skip)
            img = _find_image(images_dir, stem, ann.filename)
            if img is None:
                raise DatasetError(f"{images_dir}: image for {stem} not found")
        except DatasetError as e:
            if skip is None:
                raise
            skip.add(str(e), image=True)
            continue
        records.append(ImageRecord(stem, img, ann.width, ann.height, boxes, labels, ignore))
    if skip:
        skip.report(f"{name} {split_file or ann_dir}")
    log.info("%s: %d images, %d boxes (%d difficult)", name, len(records), sum(len(r) for r in records),
             sum(int(r.ignore.sum()) for r in records))
    return Dataset(name, tuple(classes), tuple(classes), tuple(records))
