"""Small frozen records that cross module boundaries.

Boxes follow :mod:`detector.boxes` (float32 ``[N, 4]``, 0-based continuous xyxy). Labels are 0-based
indices into the dataset's ``classes`` tuple (foreground classes only; a classifier's background output
is index 0 of its own head and never appears as a label here).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .boxes import as_boxes

__all__ = ["ImageRecord", "Dataset", "Detections", "DatasetError"]


class DatasetError(ValueError):
    """A malformed annotation, unknown class, missing image or otherwise unusable dataset input."""


def _labels(x, n: int, name: str, dtype) -> np.ndarray:
    arr = np.asarray(x, dtype=dtype).reshape(-1)
    if len(arr) != n:
        raise ValueError(f"{name} has {len(arr)} entries for {n} boxes")
    return arr


@dataclass(frozen=True, eq=False)
class ImageRecord:
    """One image and its ground truth.

    ``boxes`` float32 ``[N, 4]`` xyxy; ``labels`` int64 ``[N]`` (index into ``Dataset.classes``);
    ``ignore`` bool ``[N]`` (VOC ``difficult``, COCO ``iscrowd``: neither a hit nor a miss).
    ``index`` is the ILSVRC submission index (line in ``det_lists/val.txt``) when known.
    ``image_path`` may be None when only annotations exist (the ILSVRC devkit data).
    """

    image_id: str
    image_path: Path | None
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    ignore: np.ndarray | None = None
    index: int | None = None

    def __post_init__(self) -> None:
        boxes = as_boxes(self.boxes)
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "labels", _labels(self.labels, len(boxes), "labels", np.int64))
        ign = np.zeros(len(boxes), bool) if self.ignore is None else self.ignore
        object.__setattr__(self, "ignore", _labels(ign, len(boxes), "ignore", bool))

    def __len__(self) -> int:
        return len(self.boxes)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A list of records with the class list they index into.

    ``classes``: the identifiers used in annotation files (WNIDs for ILSVRC, names for VOC/COCO), in
    output order; ``class_names``: human-readable names, same order.
    """

    name: str
    classes: tuple[str, ...]
    class_names: tuple[str, ...]
    records: tuple[ImageRecord, ...]

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)


@dataclass(frozen=True, eq=False)
class Detections:
    """Detections on one image: ``boxes`` float32 ``[N, 4]`` xyxy, ``scores`` float32 ``[N]``,
    ``labels`` int64 ``[N]`` (index into the detector's class list)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        boxes = as_boxes(self.boxes)
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", _labels(self.scores, len(boxes), "scores", np.float32))
        object.__setattr__(self, "labels", _labels(self.labels, len(boxes), "labels", np.int64))

    @staticmethod
    def empty() -> "Detections":
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.boxes)
