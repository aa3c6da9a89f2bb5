"""ILSVRC evaluation: every devkit rule on hand-computed cases, the submission format, and the fast port compared
per class with a literal transcription of eval_detection.m's loops on the real demo submission."""
from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from detector.boxes import from_one_based_inclusive
from detector.evaluation import evaluate
from detector.evaluation.common import area_ap
from detector.evaluation.report import write_json
from detector.evaluation.ilsvrc import (Submission, detections_from_submission, evaluate_submission, gt_thresholds,
                                        read_submission, submission_from_detections, write_submission)
from detector.structures import Dataset, DatasetError, ImageRecord


def _ds(images: list[list[tuple[int, list[float]]]], k: int = 3) -> Dataset:
    """images[i] = [(det_id, [xmin, ymin, xmax, ymax] 1-based inclusive), ...]; image index = i + 1."""
    recs = []
    for i, objs in enumerate(images):
        boxes = from_one_based_inclusive(np.array([b for _, b in objs], np.float64).reshape(-1, 4))
        recs.append(ImageRecord(f"im{i + 1}", None, 500, 500, boxes, [c - 1 for c, _ in objs], index=i + 1))
    return Dataset("t", tuple(f"n{c:08d}" for c in range(k)), tuple(f"c{c}" for c in range(k)), tuple(recs))


def _sub(rows: list[tuple]) -> Submission:
    a = np.array(rows, np.float64).reshape(-1, 7)
    return Submission(a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2], a[:, 3:])


def _ap(ds, rows, blacklist=None, cls=1):
    return evaluate_submission(ds, _sub(rows), blacklist).per_class[cls - 1]


def test_small_object_threshold_plus_one_widths_and_ge():
    # 10x10 object (xmin 1..xmax 10 inclusive): thr = 100 / (20*20) = 0.25 exactly
    assert gt_thresholds(np.array([[1, 1, 10, 10.]]))[0] == 0.25
    assert gt_thresholds(np.array([[5, 5, 5, 5.]]))[0] == pytest.approx(1 / 121)  # one pixel: w = h = 1
    assert gt_thresholds(np.array([[1, 1, 100, 100.]]))[0] == 0.5
    ds = _ds([[(1, [1, 1, 10, 10])]])
    # a 20x20 box containing it: IoU = 100/400 = 0.25 >= thr -> hit (it would miss at VOC's 0.5)
    assert _ap(ds, [(1, 1, 0.9, 1, 1, 20, 20)]).ap == 1.0
    # 21x20: IoU = 100/420 < 0.25 -> false positive
    assert _ap(ds, [(1, 1, 0.9, 1, 1, 21, 20)]).ap == 0.0


def test_second_detection_matches_second_object_unlike_voc():
    ds = _ds([[(1, [1, 1, 50, 50]), (1, [21, 1, 70, 50])]])
    # det 2 overlaps A (0.695) more than B (0.639); A is taken, so the devkit gives it B
    rows = [(1, 1, 0.9, 1, 1, 50, 50), (1, 1, 0.8, 10, 1, 59, 50)]
    r = _ap(ds, rows)
    assert (r.ap, r.num_gt, r.num_det) == (1.0, 2, 2)
    dets = detections_from_submission(ds, _sub(rows))
    assert evaluate(ds, dets, "voc").per_class[0].ap == pytest.approx(0.5)  # VOC: duplicate of A
    assert evaluate(ds, dets, "ilsvrc").per_class[0].ap == 1.0  # the generic entry point, library boxes


def test_duplicates_are_false_positives():
    ds = _ds([[(1, [1, 1, 50, 50]), (1, [201, 201, 250, 250])]])
    rows = [(1, 1, 0.9, 1, 1, 50, 50), (1, 1, 0.8, 2, 2, 50, 50), (1, 1, 0.7, 201, 201, 250, 250)]
    r = _ap(ds, rows)  # tp fp tp: precision 1, 1/2, 2/3; recall 1/2, 1/2, 1 -> 0.5 * 1 + 0.5 * 2/3
    assert r.ap == pytest.approx(0.5 + 1 / 3)
    np.testing.assert_allclose(r.precision, [1, 0.5, 2 / 3])
    np.testing.assert_allclose(r.recall, [0.5, 0.5, 1])


def test_higher_confidence_takes_the_object_first():
    ds = _ds([[(1, [1, 1, 50, 50])]])
    # listed first but lower confidence: the 0.9 detection (IoU 0.92) is matched first, the 0.5 exact one is a FP
    r = _ap(ds, [(1, 1, 0.5, 1, 1, 50, 50), (1, 1, 0.9, 1, 1, 48, 50)])
    np.testing.assert_allclose(r.precision, [1, 0.5])


def test_blacklist_ignored_on_both_sides():
    ds = _ds([[(1, [1, 1, 50, 50])], [(1, [1, 1, 50, 50])]])
    rows = [(1, 1, 0.95, 300, 300, 350, 350), (2, 1, 0.5, 1, 1, 50, 50)]
    plain = _ap(ds, rows)  # FP then TP over 2 objects: precision 0, 1/2; recall 0, 1/2 -> 0.25
    assert (plain.ap, plain.num_gt, plain.num_det) == (0.25, 2, 2)
    bl = _ap(ds, rows, {(1, 1)})  # image 1, class 1: its object and its detection vanish
    assert (bl.ap, bl.num_gt, bl.num_det) == (1.0, 1, 1)
    assert _ap(ds, rows, {(1, 2)}).ap == 0.25  # another class's blacklist entry changes nothing


def test_empty_classes_and_no_detections(tmp_path):
    ds = _ds([[(1, [1, 1, 50, 50])], [(2, [1, 1, 50, 50])]])
    r = evaluate_submission(ds, _sub([(1, 3, 0.9, 1, 1, 50, 50)]))
    assert r.per_class[0].ap == 0.0 and r.per_class[1].ap == 0.0  # ground truth but no detections: AP 0
    assert math.isnan(r.per_class[2].ap) and r.per_class[2].num_det == 1  # no ground truth: NaN (devkit: NaN)
    assert r.mAP == 0.0  # mean over the classes with ground truth
    assert math.isnan(r.to_dict()["per_class"][2]["ap"])
    write_json(r, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["per_class"][2]["ap"] is None  # strict JSON: null
    empty = evaluate_submission(ds, _sub([]))
    assert empty.mAP == 0.0 and all(c.num_det == 0 for c in empty.per_class)
    # the devkit's own mean(ap): classes 1..2 only (3 = the highest DET_ID with ground truth is 2)
    assert r.extra["devkit_mAP"] == 0.0


def test_devkit_mean_of_classes_without_ground_truth():
    # ground truth of classes 1 and 3 (one object each, both found); class 2 has none
    ds = _ds([[(1, [1, 1, 50, 50])], [(3, [1, 1, 50, 50])]])
    hits = [(1, 1, 0.9, 1, 1, 50, 50), (2, 3, 0.9, 1, 1, 50, 50)]
    r = evaluate_submission(ds, _sub(hits))
    assert r.mAP == 1.0  # ours: mean over the classes with ground truth
    assert r.extra["devkit_mAP"] == pytest.approx(2 / 3)  # devkit: class 2 without detections has AP 0
    r = evaluate_submission(ds, _sub(hits + [(1, 2, 0.1, 1, 1, 50, 50)]))
    assert r.mAP == 1.0 and math.isnan(r.per_class[1].ap)
    assert math.isnan(r.extra["devkit_mAP"])  # devkit: recall 0/0 -> AP NaN -> mean NaN
    # all of class 3's objects blacklisted and only a blacklisted detection of it: still NaN for the devkit
    r = evaluate_submission(ds, _sub(hits), {(2, 3)})
    assert r.per_class[2].num_gt == 0 and math.isnan(r.extra["devkit_mAP"]) and r.mAP == 1.0


def test_detections_outside_the_evaluated_images_are_dropped():
    ds = _ds([[(1, [1, 1, 50, 50])]])
    r = evaluate_submission(ds, _sub([(1, 1, 0.5, 1, 1, 50, 50), (7, 1, 0.9, 1, 1, 50, 50)]))
    assert r.per_class[0].ap == 1.0 and r.extra["dropped_outside"] == 1


def test_area_ap_envelope_by_hand():
    # precision 1, 0, 2/3 at recall 1/3, 1/3, 2/3 -> envelope 1, 2/3, 2/3 -> 1/3 + 1/3 * 2/3
    assert area_ap(np.array([1, 1, 2]) / 3, np.array([1, 0, 2 / 3])) == pytest.approx(1 / 3 + 2 / 9)
    assert area_ap(np.zeros(0), np.zeros(0)) == 0.0
    assert area_ap(np.array([0.0, 0.5]), np.array([np.nan, 1.0])) == 0.5  # MATLAB max ignores NaN


def test_submission_round_trip_and_errors(tmp_path):
    ds = _ds([[(1, [1, 1, 50, 50])], [(2, [3, 4, 60, 70])]])
    sub = _sub([(2, 2, 0.25, 3.5, 4, 60, 70.25), (1, 1, 0.5, 1, 1, 50, 50)])
    p = tmp_path / "s.txt"
    write_submission(p, sub)
    back = read_submission(p)
    assert back.image_index.tolist() == [1, 2] and back.det_id.tolist() == [1, 2]
    np.testing.assert_allclose(back.boxes, [[1, 1, 50, 50], [3.5, 4, 60, 70.25]])
    dets = detections_from_submission(ds, back)
    np.testing.assert_allclose(dets["im2"].boxes, [[2.5, 3, 60, 70.25]])  # 0-based xyxy
    again = submission_from_detections(ds, dets)
    np.testing.assert_allclose(again.boxes[np.argsort(again.image_index)], back.boxes)
    p.write_text("1 1 0.5 1 1 50 50\n2 1 0.5 1 1 50\n")
    with pytest.raises(DatasetError, match=r"s.txt:2: expected 7 fields"):
        read_submission(p)
    p.write_text("1 1 0.5 1 1 50 50\n\n3 201 0.5 1 1 50 50\n")
    with pytest.raises(DatasetError, match=r"s.txt:3: DET_ID"):
        read_submission(p)
    p.write_text("1 1 x 1 1 50 50\n")
    with pytest.raises(DatasetError, match=r"s.txt:1: not a number"):
        read_submission(p)


# --- literal transcription of eval_detection.m's loops (slow; the reference for the fast port) -------------

def _reference(gt: dict, preds: list, blacklist: set, num_classes: int = 200) -> list[float]:
    """gt: image_index -> (labels, [xmin ymin xmax ymax] rows); preds: (img, label, conf, bbox) in file order."""
    num_pos = [0] * (num_classes + 1)
    confs, labels_all, tp_all, fp_all = [], [], [], []
    by_img: dict[int, list] = {}
    for p in preds:
        by_img.setdefault(p[0], []).append(p)
    for i in sorted(gt):
        gt_labels, gt_bboxes = gt[i]
        gt_thr = []
        for bb in gt_bboxes:
            w, h = bb[2] - bb[0] + 1, bb[3] - bb[1] + 1
            gt_thr.append(min(0.5, (w * h) / ((w + 10) * (h + 10))))
        gt_detected = [0] * len(gt_labels)
        bl_classes = [c for (im, c) in blacklist if im == i]
        dets = sorted(by_img.get(i, []), key=lambda p: -p[2])  # sort(conf, 'descend'), stable
        for (_, lab, conf, bb) in dets:
            confs.append(conf)
            labels_all.append(lab)
            if lab in bl_classes:
                tp_all.append(0)
                fp_all.append(0)
                continue
            ovmax, kmax = -math.inf, -1
            for k in range(len(gt_labels)):
                if lab != gt_labels[k] or gt_detected[k] > 0:
                    continue
                bbgt = gt_bboxes[k]
                bi = [max(bb[0], bbgt[0]), max(bb[1], bbgt[1]), min(bb[2], bbgt[2]), min(bb[3], bbgt[3])]
                iw = bi[2] - bi[0] + 1
                ih = bi[3] - bi[1] + 1
                if iw > 0 and ih > 0:
                    ua = ((bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1) + (bbgt[2] - bbgt[0] + 1) * (bbgt[3] - bbgt[1] + 1)
                          - iw * ih)
                    ov = iw * ih / ua
                    if ov >= gt_thr[k] and ov > ovmax:
                        ovmax, kmax = ov, k
            if kmax >= 0:
                tp_all.append(1)
                fp_all.append(0)
                gt_detected[kmax] = 1
            else:
                tp_all.append(0)
                fp_all.append(1)
        for lab in gt_labels:
            if lab not in bl_classes:
                num_pos[lab] += 1
    order = sorted(range(len(confs)), key=lambda j: -confs[j])
    aps = []
    for c in range(1, num_classes + 1):
        tp = fp = 0
        rec, prec = [], []
        for j in order:
            if labels_all[j] != c:
                continue
            tp += tp_all[j]
            fp += fp_all[j]
            rec.append(tp / num_pos[c] if num_pos[c] else math.nan)
            prec.append(tp / (tp + fp) if tp + fp else math.nan)
        mrec, mpre = [0.0] + rec + [1.0], [0.0] + prec + [0.0]
        for i in range(len(mpre) - 2, -1, -1):
            mpre[i] = mpre[i + 1] if math.isnan(mpre[i]) else max(mpre[i], mpre[i + 1])
        aps.append(sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1]))
    return aps


def test_fast_port_equals_literal_loops_on_the_demo_submission(shared_data, tmp_path):
    from detector.datasets.ilsvrc import devkit_paths, load_ilsvrc, read_blacklist

    devkit = shared_data / "ilsvrc2014_devkit"
    lines = (devkit / "data/det_lists/ilsvrc13_val2.txt").read_text().splitlines()[:1500]
    lst = tmp_path / "val2_part.txt"
    lst.write_text("\n".join(lines) + "\n")
    ann = devkit / "data/ground_truth/ilsvrc13_det_val2_bbox"
    ds = load_ilsvrc(devkit, ann, image_list=lst)
    wnid = {w: i + 1 for i, w in enumerate(ds.classes)}
    # the blacklist does not touch val2 (R-CNN excluded those images), so add pairs that do, on both sides
    blacklist = read_blacklist(devkit_paths(devkit)["blacklist"], wnid)
    blacklist |= {(r.index, int(r.labels[0]) + 1) for r in ds.records[:60:3] if len(r)}
    sub = read_submission(devkit / "data/demo.val.pred.det.txt")
    fast = evaluate_submission(ds, sub, blacklist)

    gt = {}
    for r in ds.records:  # parse the XML independently of the loader
        root = ET.parse(ann / f"{r.image_id}.xml").getroot()
        labs, boxes = [], []
        for o in root.findall("object"):
            labs.append(wnid[o.findtext("name")])
            bb = o.find("bndbox")
            boxes.append([float(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax")])
        gt[r.index] = (labs, boxes)
    preds = [(int(i), int(c), float(s), [float(x) for x in b])
             for i, c, s, b in zip(sub.image_index, sub.det_id, sub.conf, sub.boxes) if int(i) in gt]
    ref = _reference(gt, preds, blacklist)
    assert fast.extra["ignored_blacklisted"] > 0 and fast.extra["num_detections"] > 2000
    have_gt = [c.num_gt > 0 for c in fast.per_class]
    np.testing.assert_allclose([c.ap for c, g in zip(fast.per_class, have_gt) if g],
                               [a for a, g in zip(ref, have_gt) if g], rtol=0, atol=1e-12)
    assert sum(have_gt) > 150
    # the devkit's mean(ap) over classes 1..(highest DET_ID with an object), NaN for classes without positives
    c_max = max(c for labs, _ in gt.values() for c in labs)
    dk = fast.extra["devkit_mAP"]
    ref_mean = float(np.mean(ref[:c_max]))
    assert (math.isnan(dk) and math.isnan(ref_mean)) or dk == pytest.approx(ref_mean, abs=1e-12)
