"""COCO-format JSON through pycocotools: ``bbox`` ``x, y, w, h`` -> library xyxy at load; ``iscrowd``
boxes kept with ``ignore=True``. Classes are the categories sorted by id; labels index into them."""
from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path

import numpy as np

from ..boxes import xywh_to_xyxy
from ..structures import Dataset, DatasetError, ImageRecord
from .xml_common import SkipCounter

__all__ = ["load_coco", "open_coco"]

log = logging.getLogger(__name__)


def open_coco(path: Path):
    """A ``pycocotools.coco.COCO`` for ``path``; malformed JSON raises :class:`DatasetError` naming it."""
    from pycocotools.coco import COCO

    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{p}: COCO annotation file not found")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{p}: malformed JSON ({e})") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data, dict) or key not in data:
            raise DatasetError(f"{p}: not a COCO instances file (missing '{key}')")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_coco(annotations_json: Path, images_dir: Path | None = None, skip_bad: bool = False) -> Dataset:
    coco = open_coco(annotations_json)
    cats = sorted(coco.loadCats(coco.getCatIds()), key=lambda c: c["id"])
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    skip = SkipCounter() if skip_bad else None
    records = []
    for img_id in sorted(coco.getImgIds()):
        info = coco.imgs[img_id]
        w, h = int(info.get("width", 0)), int(info.get("height", 0))
        boxes, labels, ignore = [], [], []
        try:
            path = Path(images_dir) / info["file_name"] if images_dir is not None else None
            if path is not None and not path.is_file():
                raise DatasetError(f"{annotations_json}: image {path} not found")
            for a in coco.imgToAnns.get(img_id, []):
                problem = None
                bbox = a.get("bbox")
                if a.get("category_id") not in cat_index:
                    problem = f"{annotations_json}: annotation {a.get('id')} has unknown category {a.get('category_id')}"
                elif not (isinstance(bbox, list) and len(bbox) == 4) or bbox[2] <= 0 or bbox[3] <= 0:
                    problem = f"{annotations_json}: annotation {a.get('id')} has a degenerate bbox {bbox}"
                if problem:
                    if skip is None:
                        raise DatasetError(problem + " (pass --skip-bad to drop it with a warning)")
                    skip.add(problem)
                    continue
                boxes.append(xywh_to_xyxy(bbox)[0])
                labels.append(cat_index[a["category_id"]])
                ignore.append(bool(a.get("iscrowd", 0)))
        except DatasetError as e:
            if skip is None:
                raise
            skip.add(str(e), image=True)
            continue
        records.append(ImageRecord(str(img_id), path, w, h, np.array(boxes, np.float32).reshape(-1, 4),
                                   np.array(labels, np.int64), np.array(ignore, bool)))
    if skip:
        skip.report(f"COCO {annotations_json}")
    names = tuple(c["name"] for c in cats)
    return Dataset("coco", tuple(str(c["id"]) for c in cats), names, tuple(records))
