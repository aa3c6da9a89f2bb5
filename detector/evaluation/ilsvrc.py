"""ILSVRC DET evaluation: a port of the devkit's ``eval_detection.m`` semantics (devkit readme section 2.3,
REFERENCE.md), and the submission format.

Rules (all in the devkit's 1-based inclusive coordinates, widths ``xmax - xmin + 1``, float64 as MATLAB):

* per ground-truth box ``thr = min(0.5, w*h / ((w+10)*(h+10)))``; a detection may match it when
  ``iw > 0 and ih > 0`` and ``IoU >= thr`` (intersection ``min - max + 1``, union ``A + B - I``);
* per image, detections in descending confidence (stable) each take, among the *unmatched* ground truth of
  their class meeting its threshold, the one of highest IoU (first in file order on ties); else false positive.
  A second detection on a matched object may therefore still match another object;
* blacklisted (image_index, DET_ID) pairs: those detections are ignored, those ground truths not counted.
  (The devkit keeps the ignored detections with tp = fp = 0, which leaves ``VOCap`` unchanged; we drop them.);
* per class all detections sorted by descending confidence (stable), ``VOCap`` area AP; mAP = mean over the
  classes (see :func:`detector.evaluation.common.mean_ap` for classes without ground truth).

Detections on images outside the evaluated list are dropped with a logged count (the devkit crashes on them).
The matcher loops only over detections that share an (image, class) with some ground truth, each step a numpy
operation on that image's boxes of that class, so 10k images / 25k detections take well under a second.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..boxes import from_one_based_inclusive, to_one_based_inclusive
from ..structures import Dataset, DatasetError, Detections
from .common import ClassResult, EvalResult, area_ap, group_bounds, mean_ap, pr_curve, stable_desc

__all__ = ["Submission", "read_submission", "write_submission", "submission_from_detections", "submission_from_indexed",
           "detections_from_submission", "evaluate_submission", "devkit_mean", "gt_thresholds", "match_image_class"]

log = logging.getLogger(__name__)

DEFAULT_IOU_THR = 0.5
PIXEL_TOLERANCE = 10


@dataclass
class Submission:
    """Detections as in a submission file, one row each: ``image_index`` int64 ``[D]`` (line in val.txt),
    ``det_id`` int64 ``[D]`` (1..200), ``conf`` float64 ``[D]``, ``boxes`` float64 ``[D, 4]`` 1-based inclusive
    ``xmin ymin xmax ymax`` (NOT the library convention; convert with :mod:`detector.boxes`)."""

    image_index: np.ndarray
    det_id: np.ndarray
    conf: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return len(self.conf)


def _parse_slow(path: Path, text: str) -> np.ndarray:
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 7:
            raise DatasetError(f"{path}:{i}: expected 7 fields 'image_index DET_ID confidence xmin ymin xmax ymax', "
                               f"got {len(parts)}: {line!r}")
        try:
            rows.append([float(x) for x in parts])
        except ValueError:
            raise DatasetError(f"{path}:{i}: not a number in {line!r}") from None
    return np.array(rows, np.float64).reshape(-1, 7)


def read_submission(path: Path, num_classes: int = 200) -> Submission:
    """Read ``image_index DET_ID confidence xmin ymin xmax ymax`` lines; a malformed line raises
    :class:`DatasetError` naming the file and line."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{p}: submission file not found")
    text = p.read_text()
    try:
        arr = np.loadtxt(p, dtype=np.float64, ndmin=2) if text.strip() else np.zeros((0, 7))
        if arr.shape[1] != 7:
            raise ValueError
    except ValueError:
        arr = _parse_slow(p, text)  # finds and names the bad line
    lines = np.nonzero([bool(line.split()) for line in text.splitlines()])[0] + 1
    for col, what in ((0, "image_index"), (1, "DET_ID")):
        v = arr[:, col]
        bad = np.nonzero((v != np.round(v)) | (v < 1) | ((v > num_classes) if col == 1 else False))[0]
        if len(bad):
            i = bad[0]
            raise DatasetError(f"{p}:{lines[i]}: {what} must be an integer"
                               + (f" in 1..{num_classes}" if col == 1 else " >= 1") + f", got {arr[i, col]:g}")
    if not np.isfinite(arr[:, 2:]).all():
        i = np.nonzero(~np.isfinite(arr[:, 2:]).all(axis=1))[0][0]
        raise DatasetError(f"{p}:{lines[i]}: non-finite confidence or box")
    return Submission(arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64), arr[:, 2].copy(), arr[:, 3:].copy())


def write_submission(path: Path, sub: Submission) -> None:
    """Write the submission file (boxes as stored: 1-based inclusive), sorted by image index (stable)."""
    order = np.argsort(sub.image_index, kind="stable")
    with open(path, "w") as f:
        for i in order:
            b = sub.boxes[i]
            f.write(f"{sub.image_index[i]} {sub.det_id[i]} {sub.conf[i]:.6f} "
                    f"{b[0]:.6f} {b[1]:.6f} {b[2]:.6f} {b[3]:.6f}\n")


def _image_keys(dataset: Dataset) -> list[int]:
    """Submission index of every record: ``record.index`` (val.txt line) or, when unknown, position + 1."""
    return [r.index if r.index is not None else i + 1 for i, r in enumerate(dataset.records)]


def submission_from_detections(dataset: Dataset, detections: dict[str, Detections]) -> Submission:
    """Library detections (labels index ``dataset.classes``; DET_ID = label + 1) -> submission rows.
    Boxes converted with :func:`detector.boxes.to_one_based_inclusive`; an unknown image_id raises."""
    keys = dict(zip((r.image_id for r in dataset.records), _image_keys(dataset)))
    return submission_from_indexed(detections, keys, len(dataset.classes), f"dataset {dataset.name}")


def submission_from_indexed(detections: dict[str, Detections], image_index: dict[str, int],
                            num_classes: int = 200, where: str = "the image list") -> Submission:
    """As :func:`submission_from_detections` with an explicit ``image_id -> image_index`` map (e.g.
    ``dict(read_image_list(<devkit>/data/det_lists/val.txt))`` for images named by their val stem)."""
    keys = image_index
    parts = []
    for image_id, d in detections.items():
        if image_id not in keys:
            raise DatasetError(f"detections for image {image_id!r}, which is not in {where}")
        if len(d) and (d.labels.min() < 0 or d.labels.max() >= num_classes):
            raise DatasetError(f"detections for {image_id}: labels outside 0..{num_classes - 1}")
        parts.append((np.full(len(d), keys[image_id], np.int64), d.labels + 1, d.scores.astype(np.float64),
                      to_one_based_inclusive(d.boxes)))
    if not parts:
        return Submission(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 4)))
    return Submission(*(np.concatenate(x) for x in zip(*parts)))


def detections_from_submission(dataset: Dataset, sub: Submission) -> dict[str, Detections]:
    """Inverse of :func:`submission_from_detections` for the records of ``dataset`` (others dropped)."""
    ids = dict(zip(_image_keys(dataset), (r.image_id for r in dataset.records)))
    out: dict[str, Detections] = {}
    for idx, image_id in ids.items():
        m = sub.image_index == idx
        out[image_id] = Detections(from_one_based_inclusive(sub.boxes[m]), sub.conf[m], sub.det_id[m] - 1)
    return out


def gt_thresholds(gt_boxes: np.ndarray) -> np.ndarray:
    """``min(0.5, w*h / ((w+10)(h+10)))`` per box of float64 ``[G, 4]`` 1-based inclusive boxes."""
    w = gt_boxes[:, 2] - gt_boxes[:, 0] + 1
    h = gt_boxes[:, 3] - gt_boxes[:, 1] + 1
    return np.minimum(DEFAULT_IOU_THR, (w * h) / ((w + PIXEL_TOLERANCE) * (h + PIXEL_TOLERANCE)))


def match_image_class(det_boxes: np.ndarray, gt_boxes: np.ndarray, gt_thr: np.ndarray) -> np.ndarray:
    """Greedy devkit matching of one image's detections of one class (already in descending confidence)
    against that image's ground truth of that class. Boxes float64 1-based inclusive. Returns tp bool ``[D]``."""
    bb, gt = det_boxes[:, None, :], gt_boxes[None, :, :]
    iw = np.minimum(bb[..., 2], gt[..., 2]) - np.maximum(bb[..., 0], gt[..., 0]) + 1
    ih = np.minimum(bb[..., 3], gt[..., 3]) - np.maximum(bb[..., 1], gt[..., 1]) + 1
    with np.errstate(divide="ignore", invalid="ignore"):
        ua = ((bb[..., 2] - bb[..., 0] + 1) * (bb[..., 3] - bb[..., 1] + 1)
              + (gt[..., 2] - gt[..., 0] + 1) * (gt[..., 3] - gt[..., 1] + 1) - iw * ih)
        ov = iw * ih / ua
    ok = (iw > 0) & (ih > 0) & (ov >= gt_thr[None, :])
    ov = np.where(ok, ov, -np.inf)
    tp = np.zeros(len(det_boxes), bool)
    detected = np.zeros(len(gt_boxes), bool)
    for j in np.nonzero(ok.any(axis=1))[0]:
        row = np.where(detected, -np.inf, ov[j])
        k = int(np.argmax(row))  # first maximum = the devkit's strict '>' over k in file order
        if row[k] > -np.inf:
            tp[j] = True
            detected[k] = True
    return tp


def devkit_mean(ap: list[float], num_gt_all: np.ndarray, num_det_all: np.ndarray) -> float:
    """The mean ``eval_detection.m`` + ``demo_eval_det.m`` report, classes without ground truth included as they are.

    The devkit's ``ap`` vector has ``length(num_pos_per_class)`` entries: classes 1..c_max, c_max = the highest
    DET_ID with a ground-truth object in the evaluated images (counted before the blacklist). A class in that range
    with no positives left (none, or all blacklisted) has recall ``0/0 = NaN``: its AP is NaN when it has any
    detection on the evaluated images (blacklisted ones included), 0 when it has none. ``mean(ap)`` is then NaN as
    soon as one AP is NaN (and for an empty vector). ``ap``: our per-class APs (NaN without ground truth);
    ``num_gt_all`` ``[K]``: objects per class before the blacklist; ``num_det_all`` ``[K]``: detections per class
    on evaluated images, blacklisted included.
    """
    have = np.nonzero(np.asarray(num_gt_all) > 0)[0]
    if len(have) == 0:
        return float("nan")
    out = []
    for c in range(int(have[-1]) + 1):
        if not np.isnan(ap[c]):
            out.append(ap[c])
        else:
            out.append(float("nan") if num_det_all[c] > 0 else 0.0)
    return float(np.mean(out))


def evaluate_submission(dataset: Dataset, sub: Submission,
                        blacklist: set[tuple[int, int]] | None = None) -> EvalResult:
    """Devkit-exact AP per class over the records of ``dataset`` (ground truth in library xyxy, labels
    0..K-1 = DET_ID 1..K); ``blacklist``: (image_index, DET_ID) pairs ignored on both sides."""
    blacklist = blacklist or set()
    K = len(dataset.classes)
    keys = np.array(_image_keys(dataset), np.int64)
    # ground truth, 1-based inclusive float64 (integers in the XML: exact)
    gt_img = np.concatenate([np.full(len(r), k, np.int64) for r, k in zip(dataset.records, keys)] + [[]]).astype(np.int64)
    gt_cls = np.concatenate([r.labels + 1 for r in dataset.records] + [[]]).astype(np.int64)
    gt_box = np.concatenate([to_one_based_inclusive(r.boxes) for r in dataset.records] + [np.zeros((0, 4))])
    bl = np.array(sorted(blacklist), np.int64).reshape(-1, 2)
    bl_code = bl[:, 0] * (K + 1) + bl[:, 1]
    gt_bl = np.isin(gt_img * (K + 1) + gt_cls, bl_code)
    num_gt = np.bincount(gt_cls[~gt_bl], minlength=K + 1)[1:]

    inside = np.isin(sub.image_index, keys)
    if (~inside).any():
        log.info("dropped %d detection(s) on %d image(s) outside the %d evaluated images", int((~inside).sum()),
                 len(np.unique(sub.image_index[~inside])), len(keys))
    if len(sub) and sub.det_id.max() > K:
        raise DatasetError(f"submission has DET_ID {sub.det_id.max()} but the dataset has {K} classes")
    det_code = sub.image_index * (K + 1) + sub.det_id
    black = inside & np.isin(det_code, bl_code)
    if black.any():
        log.info("ignored %d detection(s) of blacklisted (image, class) pairs", int(black.sum()))
    keep = np.nonzero(inside & ~black)[0]
    img, cls, conf, box = sub.image_index[keep], sub.det_id[keep], sub.conf[keep], sub.boxes[keep]
    order = np.lexsort((-conf, cls, img))  # stable: image, class, descending confidence, then file order
    img, cls, conf, box = img[order], cls[order], conf[order], box[order]
    code = img * (K + 1) + cls

    gt_keep = np.nonzero(~gt_bl)[0]
    gt_order = gt_keep[np.lexsort((gt_cls[gt_keep], gt_img[gt_keep]))]  # stable: file order within a group
    gt_code = gt_img[gt_order] * (K + 1) + gt_cls[gt_order]
    gt_groups = {int(gt_code[a]): gt_order[a:b] for a, b in group_bounds(gt_code)}
    gt_thr = gt_thresholds(gt_box)

    tp = np.zeros(len(code), bool)
    for a, b in group_bounds(code):
        g = gt_groups.get(int(code[a]))
        if g is not None:
            tp[a:b] = match_image_class(box[a:b], gt_box[g], gt_thr[g])

    per_class = []
    names = dataset.class_names
    for c in range(1, K + 1):
        m = np.nonzero(cls == c)[0]
        o = m[stable_desc(conf[m])]
        prec, rec = pr_curve(tp[o], ~tp[o], int(num_gt[c - 1]))
        ap = area_ap(rec, prec) if num_gt[c - 1] > 0 else float("nan")
        per_class.append(ClassResult(c, dataset.classes[c - 1], names[c - 1], ap, int(num_gt[c - 1]), len(m),
                                     prec, rec))
    # the devkit's own mean (demo_eval_det.m: mean(ap)) over its ap vector, for comparison with mAP
    det_inside = np.bincount(sub.det_id[inside], minlength=K + 1)[1:]
    devkit_map = devkit_mean([c.ap for c in per_class], np.bincount(gt_cls, minlength=K + 1)[1:], det_inside)
    if not np.isclose(devkit_map, mean_ap(per_class), rtol=0, atol=1e-12, equal_nan=True):
        log.info("the devkit's own mean(ap) would be %s (classes without ground truth, see devkit_mean)",
                    f"{devkit_map:.6f}")
    extra = {"devkit_mAP": devkit_map, "num_images": int(len(keys)), "num_detections": int(len(keep)),
             "dropped_outside": int((~inside).sum()), "ignored_blacklisted": int(black.sum()),
             "ignored_gt_blacklisted": int(gt_bl.sum())}
    return EvalResult("ilsvrc", mean_ap(per_class), per_class, extra)
