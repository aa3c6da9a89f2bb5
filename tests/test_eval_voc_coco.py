"""VOC (area and 11-point, difficult ignored), COCO through pycocotools, the detections JSON and the report."""
from __future__ import annotations

import json

import numpy as np
import pytest

from detector.evaluation import evaluate
from detector.evaluation.common import voc07_ap
from detector.evaluation.detections_io import (ImageDetections, read_detections_json, relabel,
                                               write_detections_json)
from detector.evaluation.report import format_table, plot_pr_curves, write_json
from detector.structures import Dataset, DatasetError, Detections, ImageRecord


def _ds(ignore_second: bool = False) -> Dataset:
    r1 = ImageRecord("a", None, 100, 100, [[0, 0, 10, 10], [50, 50, 70, 70]], [0, 0], [False, ignore_second])
    r2 = ImageRecord("b", None, 100, 100, [[0, 0, 20, 20]], [1])
    return Dataset("t", ("cat", "dog"), ("cat", "dog"), (r1, r2))


def _dets():
    return {"a": Detections([[0, 0, 10, 10], [50, 50, 70, 70], [80, 80, 90, 90]], [0.9, 0.8, 0.95], [0, 0, 0]),
            "b": Detections([[0, 0, 20, 19]], [0.7], [1])}


def test_voc_area_and_11_point_by_hand():
    r = evaluate(_ds(), _dets(), "voc")
    cat = r.per_class[0]  # FP (0.95), TP, TP over 2 objects: precision 0, 1/2, 2/3; recall 0, 1/2, 1
    np.testing.assert_allclose(cat.precision, [0, 0.5, 2 / 3])
    assert cat.ap == pytest.approx(2 / 3)  # envelope 2/3 over the whole recall range
    assert r.per_class[1].ap == 1.0 and r.mAP == pytest.approx((2 / 3 + 1) / 2)
    r07 = evaluate(_ds(), _dets(), "voc07")
    assert r07.per_class[0].ap == pytest.approx(2 / 3)  # 11 points, each max precision 2/3
    assert voc07_ap(np.array([0.5]), np.array([1.0])) == pytest.approx(6 / 11)


def test_voc_difficult_is_neither_hit_nor_miss():
    r = evaluate(_ds(ignore_second=True), _dets(), "voc").per_class[0]
    assert r.num_gt == 1  # the difficult object is not counted
    np.testing.assert_allclose(r.precision, [0, 0.5])  # its detection left out of the curve
    assert r.ap == 0.5


def test_voc_rejects_unknown_images_and_labels():
    with pytest.raises(DatasetError, match="not in dataset"):
        evaluate(_ds(), {"zzz": Detections.empty()}, "voc")
    with pytest.raises(DatasetError, match="labels outside"):
        evaluate(_ds(), {"a": Detections([[0, 0, 1, 1]], [1.0], [5])}, "voc")
    with pytest.raises(DatasetError, match="unknown metric"):
        evaluate(_ds(), {}, "map50")


def test_coco_perfect_and_empty():
    ds = _ds()
    perfect = {r.image_id: Detections(r.boxes, np.ones(len(r)), r.labels) for r in ds.records}
    r = evaluate(ds, perfect, "coco")
    assert r.mAP == pytest.approx(1.0) and [c.ap for c in r.per_class] == pytest.approx([1.0, 1.0])
    assert r.extra["stats"]["AP50"] == pytest.approx(1.0)
    assert evaluate(ds, {}, "coco").mAP == 0.0


def test_detections_json_round_trip_and_errors(tmp_path):
    p = tmp_path / "d.json"
    d = _dets()
    write_detections_json(p, ["cat", "dog"], ["Cat", "Dog"],
                          [ImageDetections(k, f"/x/{k}.jpg", 100, 100, v) for k, v in d.items()])
    f = read_detections_json(p)
    assert f.classes == ["cat", "dog"] and [im.image_id for im in f.images] == ["a", "b"]
    for k, v in f.by_image().items():
        np.testing.assert_allclose(v.boxes, d[k].boxes)
        np.testing.assert_allclose(v.scores, d[k].scores)
        assert v.labels.tolist() == d[k].labels.tolist()
    doc = json.loads(p.read_text())
    assert doc["version"] == 1 and "0-based" in doc["box_convention"]
    assert doc["images"][1]["detections"][0] == {"class": "dog", "class_name": "Dog", "score": 0.7,
                                                 "box": [0.0, 0.0, 20.0, 19.0]}
    swapped = relabel(f, ("dog", "cat"))
    assert swapped["a"].labels.tolist() == [1, 1, 1]
    with pytest.raises(DatasetError, match="not among the dataset"):
        relabel(f, ("cat",), p)
    doc["images"][0]["detections"][1]["class"] = "cow"
    p.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"d.json: images\[0\] \(a\).detections\[1\]: unknown class 'cow'"):
        read_detections_json(p)
    p.write_text('{"format": "googlenet-rcnn-detections",\n "version": 1,,}')
    with pytest.raises(DatasetError, match="d.json: malformed JSON .line 2"):
        read_detections_json(p)


def test_report_outputs(tmp_path):
    r = evaluate(_ds(), _dets(), "voc")
    write_json(r, tmp_path / "r.json")
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["mAP"] == pytest.approx(r.mAP)
    assert set(doc["per_class"][0]) >= {"id", "wnid", "name", "ap", "num_gt", "num_det", "precision", "recall"}
    assert "cat" in format_table(r)
    plot_pr_curves(r, tmp_path / "pr.png")
    assert (tmp_path / "pr.png").read_bytes()[:4] == b"\x89PNG"
