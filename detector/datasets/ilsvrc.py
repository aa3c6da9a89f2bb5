"""ILSVRC DET: XML annotations named by WNID, the 200 classes of ``meta_det.mat`` in submission order,
image lists (``det_lists/*.txt``: ``name index``), the validation blacklist, and R-CNN's val1/val2 split files.

``record.index`` is the submission index of an image: its line number in ``<devkit>/data/det_lists/val.txt``
(the second column of a split file such as ``ilsvrc13_val2.txt`` is NOT that index).
"""
from __future__ import annotations

import logging
from pathlib import Path

from ..structures import Dataset, DatasetError, ImageRecord
from .ilsvrc_meta import detection_classes, read_meta_det
from .xml_common import SkipCounter, objects_to_arrays, parse_xml

__all__ = ["devkit_paths", "read_image_list", "read_blacklist", "load_ilsvrc", "IMAGE_EXTS"]

log = logging.getLogger(__name__)

IMAGE_EXTS = (".JPEG", ".jpeg", ".jpg", ".JPG", ".png")


def devkit_paths(devkit: Path) -> dict[str, Path]:
    """The files of a devkit root (``<devkit>/data/...``); a missing one raises naming it."""
    d = Path(devkit) / "data"
    paths = {"meta": d / "meta_det.mat", "val_list": d / "det_lists" / "val.txt",
             "blacklist": d / "ILSVRC2014_det_validation_blacklist.txt"}
    for k, p in paths.items():
        if not p.is_file():
            raise DatasetError(f"ILSVRC devkit {devkit}: {p} not found (expected the devkit root, "
                               "containing data/meta_det.mat and data/det_lists/val.txt)")
    return paths


def read_image_list(path: Path) -> list[tuple[str, int]]:
    """``name index`` lines -> list of (name, index); malformed lines raise naming file and line."""
    out = []
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{p}: image list not found")
    for i, line in enumerate(p.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) == 1:
            out.append((parts[0], i))
            continue
        try:
            out.append((parts[0], int(parts[1])))
        except ValueError:
            raise DatasetError(f"{p}:{i}: expected 'name index', got {line!r}") from None
    return out


def read_blacklist(path: Path, wnid_to_id: dict[str, int]) -> set[tuple[int, int]]:
    """The devkit blacklist (``image_index wnid`` lines) -> set of (image_index, DET_ID)."""
    out = set()
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in wnid_to_id:
            raise DatasetError(f"{path}:{i}: expected 'image_index wnid' with a DET wnid, got {line!r}")
        out.add((int(parts[0]), wnid_to_id[parts[1]]))
    return out


def load_ilsvrc(devkit: Path, annotations_dir: Path, images_dir: Path | None = None,
                image_list: Path | None = None, skip_bad: bool = False) -> Dataset:
    """ILSVRC DET records.

    ``annotations_dir``: folder of ``<name>.xml``; ``image_list``: restrict to these names (first column);
    without it every XML in the folder is loaded. ``images_dir``: where ``<name>.JPEG`` lives (optional; the
    devkit ground truth has no images). Classes: the 200 WNIDs (labels 0..199 = DET_ID 1..200).
    """
    paths = devkit_paths(Path(devkit))
    meta = read_meta_det(paths["meta"])
    classes = detection_classes(meta)
    wnids = tuple(s.wnid for s in classes)
    class_index = {w: i for i, w in enumerate(wnids)}
    val_index = {name: idx for name, idx in read_image_list(paths["val_list"])}
    ann_dir = Path(annotations_dir)
    if not ann_dir.is_dir():
        raise DatasetError(f"{ann_dir}: annotation folder not found")
    if image_list is not None:
        names = [n for n, _ in read_image_list(Path(image_list))]
    else:
        names = sorted(p.stem for p in ann_dir.glob("*.xml"))
    if not names:
        raise DatasetError(f"{ann_dir}: no annotations to load")
    skip = SkipCounter() if skip_bad else None
    records = []
    for name in names:
        xml = ann_dir / f"{name}.xml"
        try:
            if not xml.is_file():
                raise DatasetError(f"{xml}: annotation missing for image {name}")
            ann = parse_xml(xml)
            # Ground truth kept exactly as annotated (no clipping): the devkit evaluates the raw boxes.
            boxes, labels, _ = objects_to_arrays(ann, xml, class_index, skip, clip_out_of_bounds=False,
                                                 allow_single_pixel=True)
            image_path = None
            if images_dir is not None:
                image_path = next((Path(images_dir) / f"{name}{e}" for e in IMAGE_EXTS
                                   if (Path(images_dir) / f"{name}{e}").is_file()), None)
                if image_path is None:
                    raise DatasetError(f"{images_dir}: image {name} not found (tried {', '.join(IMAGE_EXTS)})")
        except DatasetError as e:
            if skip is None:
                raise
            skip.add(str(e), image=True)
            continue
        records.append(ImageRecord(name, image_path, ann.width, ann.height, boxes, labels,
                                   index=val_index.get(name)))
    if skip:
        skip.report(f"ILSVRC {ann_dir}")
    log.info("ILSVRC: %d images, %d boxes from %s", len(records), sum(len(r) for r in records), ann_dir)
    return Dataset("ilsvrc", wnids, tuple(s.name for s in classes), tuple(records))
