"""tools/evaluate.py in its three forms: ground truth as detections scores 1, the mAP is the last line, and bad
input is one line on stderr with exit code 2."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from detector.cli import run
from detector.evaluation.detections_io import ImageDetections, write_detections_json
from detector.structures import Detections

REPO = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("evaluate_tool", REPO / "tools" / "evaluate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def _last_line(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_ilsvrc_submission_of_ground_truth(shared_data, tmp_path, capsys):
    dk = shared_data / "ilsvrc2014_devkit"
    lst = tmp_path / "l.txt"
    lst.write_text("\n".join((dk / "data/det_lists/ilsvrc13_val2.txt").read_text().splitlines()[:40]))
    from detector.datasets.ilsvrc import load_ilsvrc
    from detector.evaluation.ilsvrc import submission_from_detections, write_submission

    ann = dk / "data/ground_truth/ilsvrc13_det_val2_bbox"
    ds = load_ilsvrc(dk, ann, image_list=lst)
    sub = tmp_path / "s.txt"
    write_submission(sub, submission_from_detections(
        ds, {r.image_id: Detections(r.boxes, np.ones(len(r)), r.labels) for r in ds.records}))
    out = tmp_path / "r.json"
    assert run(_tool(), ["ilsvrc", "--devkit", str(dk), "--annotations", str(ann), "--detections", str(sub),
                         "--image-list", str(lst), "--json", str(out), "--plot", str(tmp_path / "p.png")]) == 0
    assert _last_line(capsys) == "mAP: 1.000000"
    doc = json.loads(out.read_text())
    assert doc["mAP"] == 1.0 and len(doc["per_class"]) == 200 and (tmp_path / "p.png").is_file()
    assert set(doc["per_class"][0]) >= {"id", "wnid", "name", "ap", "num_gt", "num_det"}


def test_voc_and_coco_forms(shared_data, tmp_path, capsys):
    root = shared_data / "bccd" / "BCCD"
    from detector.datasets.voc import load_voc

    ds = load_voc(root, "test", skip_bad=True)
    dets = tmp_path / "d.json"
    # ground truth as detections: AP 1 per class
    write_detections_json(dets, ds.classes, ds.class_names,
                          [ImageDetections(r.image_id, str(r.image_path), r.width, r.height,
                                           Detections(r.boxes, np.linspace(1, 0.5, len(r)), r.labels))
                           for r in ds.records])
    assert run(_tool(), ["voc", "--root", str(root), "--split", "test", "--detections", str(dets),
                         "--skip-bad"]) == 0
    assert _last_line(capsys) == "mAP: 1.000000"
    # the same as COCO: ground truth JSON + a standard results list
    from detector.evaluation.coco import coco_ground_truth, coco_results

    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(coco_ground_truth(ds)))
    res = tmp_path / "res.json"
    res.write_text(json.dumps(coco_results(ds, {r.image_id: Detections(r.boxes, np.ones(len(r)), r.labels)
                                                for r in ds.records})))
    capsys.readouterr()
    # (image ids of the VOC set are renumbered 1..N; the COCO loader reads them back as such)
    assert run(_tool(), ["coco", "--annotations", str(gt), "--detections", str(res)]) == 0
    assert _last_line(capsys) == "mAP: 1.000000"


@pytest.mark.parametrize("content,expected", [
    ("1 1 0.5 1 1 50\n", "s.txt:1: expected 7 fields"),
    ("1 1 0.5 1 1 50 50\n1 0 0.5 1 1 50 50\n", "s.txt:2: DET_ID"),
])
def test_bad_submission_is_one_line(shared_data, tmp_path, capsys, content, expected):
    dk = shared_data / "ilsvrc2014_devkit"
    lst = tmp_path / "l.txt"
    lst.write_text("ILSVRC2012_val_00032300 1\n")
    sub = tmp_path / "s.txt"
    sub.write_text(content)
    assert run(_tool(), ["ilsvrc", "--devkit", str(dk), "--annotations",
                         str(dk / "data/ground_truth/ilsvrc13_det_val2_bbox"), "--detections", str(sub),
                         "--image-list", str(lst)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and expected in err[-1]
