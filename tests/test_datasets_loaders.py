"""Dataset loaders: real devkit / BCCD / raccoon facts, XML and COCO JSON round trips, bad inputs, CLI options."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from detector.datasets.cli import add_dataset_arguments, dataset_from_args
from detector.datasets.coco import load_coco
from detector.datasets.ilsvrc import devkit_paths, load_ilsvrc, read_blacklist, read_image_list
from detector.datasets.voc import load_voc
from detector.datasets.xml_common import write_xml
from detector.structures import DatasetError

REPO = Path(__file__).resolve().parents[1]


def _devkit(shared_data) -> Path:
    return shared_data / "ilsvrc2014_devkit"


def test_ilsvrc_devkit_classes_indices_blacklist(shared_data, tmp_path):
    dk = _devkit(shared_data)
    lst = tmp_path / "l.txt"
    lst.write_text("ILSVRC2012_val_00032300 1\nILSVRC2012_val_00001007 2\n")
    ds = load_ilsvrc(dk, dk / "data/ground_truth/ilsvrc13_det_val2_bbox", image_list=lst)
    assert len(ds.classes) == 200 and ds.class_names[0] == "accordion" and ds.class_names[-1] == "zebra"
    val = dict(read_image_list(dk / "data/det_lists/val.txt"))
    assert [r.index for r in ds.records] == [val["ILSVRC2012_val_00032300"], val["ILSVRC2012_val_00001007"]]
    assert all(r.image_path is None and len(r) > 0 for r in ds.records)
    bl = read_blacklist(devkit_paths(dk)["blacklist"], {w: i + 1 for i, w in enumerate(ds.classes)})
    assert len(bl) == 409 and (46, ds.classes.index("n00007846") + 1) in bl  # first line: 46 n00007846 (person)


def test_ilsvrc_227_images(shared_data):
    d = shared_data / "ilsvrc13_val2_227"
    ds = load_ilsvrc(_devkit(shared_data), d / "Annotations", images_dir=d / "Data")
    assert len(ds) == 90 and all(r.image_path.is_file() and r.width == 227 for r in ds.records)
    r = next(r for r in ds.records if r.image_id == "ILSVRC2012_val_00000347")
    assert r.index == 93  # its line in det_lists/val.txt


def test_ilsvrc_xml_round_trip_and_bad_inputs(shared_data, tmp_path):
    dk = _devkit(shared_data)
    ann = tmp_path / "ann"
    ann.mkdir()
    boxes = np.array([[0, 0, 10, 20], [4, 5, 100, 80]], np.float32)
    write_xml(ann / "ILSVRC2012_val_00000001.xml", "x", 200, 100,
              [("n02672831", boxes[0], False), ("n02391049", boxes[1], False)])
    ds = load_ilsvrc(dk, ann)
    r = ds.records[0]
    np.testing.assert_array_equal(r.boxes, boxes)
    assert r.labels.tolist() == [0, 199] and r.index == 1
    with pytest.raises(DatasetError, match="ILSVRC2012_val_00000001 not found"):
        load_ilsvrc(dk, ann, images_dir=tmp_path)  # missing image
    assert len(load_ilsvrc(dk, ann, images_dir=tmp_path, skip_bad=True)) == 0
    write_xml(ann / "ILSVRC2012_val_00000002.xml", "y", 50, 50, [("n99999999", boxes[0], False)])
    with pytest.raises(DatasetError, match=r"00000002.xml: unknown class 'n99999999'"):
        load_ilsvrc(dk, ann)
    (ann / "ILSVRC2012_val_00000002.xml").write_text("<annotation><size><width>5</width>")
    with pytest.raises(DatasetError, match="00000002.xml: malformed XML"):
        load_ilsvrc(dk, ann)
    with pytest.raises(DatasetError, match="meta_det.mat"):
        load_ilsvrc(tmp_path, ann)


def test_voc_bccd_zero_area_boxes_are_counted_skips(shared_data, caplog):
    root = shared_data / "bccd" / "BCCD"
    with pytest.raises(DatasetError, match="zero-size box"):
        load_voc(root, "trainval")  # at least one of the two point annotations is in trainval or test
    with caplog.at_level("WARNING"):
        a = load_voc(root, "trainval", skip_bad=True)
        b = load_voc(root, "test", skip_bad=True)
    assert a.classes == ("Platelets", "RBC", "WBC")
    skipped = [m for m in caplog.messages if "zero-size box" in m]
    assert len(skipped) == 2 and {"BloodImage_00338", "BloodImage_00343"} == {
        s.split(".xml")[0].rsplit("/", 1)[1] for s in skipped}
    assert len(a) + len(b) == 364


def test_raccoon_split_is_fixed_and_loads(shared_data):
    d = shared_data / "raccoon"
    test = load_voc(images_dir=d / "images", annotations_dir=d / "annotations",
                    split_file=REPO / "splits/raccoon/test.txt")
    train = (REPO / "splits/raccoon/trainval.txt").read_text().split()
    stems = sorted(p.stem for p in (d / "annotations").glob("*.xml"))
    perm = np.random.default_rng(0).permutation(len(stems))
    assert train == sorted(stems[i] for i in perm[:160])  # how the split was made (splits/README.md), then sorted
    assert len(test) == 40 and not {r.image_id for r in test} & set(train)
    assert test.classes == ("raccoon",)


def test_voc_round_trip_difficult_and_bad_boxes(tmp_path):
    (tmp_path / "A").mkdir()
    (tmp_path / "I").mkdir()
    (tmp_path / "I" / "x.jpg").write_bytes(b"")
    boxes = np.array([[0, 0, 10, 20], [4, 5, 30, 40]], np.float32)
    write_xml(tmp_path / "A" / "x.xml", "x.jpg", 64, 48, [("dog", boxes[0], False), ("cat", boxes[1], True)])
    ds = load_voc(images_dir=tmp_path / "I", annotations_dir=tmp_path / "A")
    r = ds.records[0]
    assert ds.classes == ("cat", "dog") and r.labels.tolist() == [1, 0] and r.ignore.tolist() == [False, True]
    np.testing.assert_array_equal(r.boxes, boxes)
    with pytest.raises(DatasetError, match="unknown class 'cat'"):
        load_voc(images_dir=tmp_path / "I", annotations_dir=tmp_path / "A", classes=["dog"])
    write_xml(tmp_path / "A" / "x.xml", "x.jpg", 64, 48, [("dog", np.array([100, 100, 120, 130]), False)])
    with pytest.raises(DatasetError, match="outside the 64x48 image"):
        load_voc(images_dir=tmp_path / "I", annotations_dir=tmp_path / "A")
    write_xml(tmp_path / "A" / "x.xml", "x.jpg", 64, 48, [("dog", boxes[0], False)])
    (tmp_path / "I" / "x.jpg").unlink()
    with pytest.raises(DatasetError, match="image for x not found"):
        load_voc(images_dir=tmp_path / "I", annotations_dir=tmp_path / "A")


def test_coco_round_trip_crowd_and_bad_boxes(tmp_path):
    doc = {"images": [{"id": 7, "file_name": "a.jpg", "width": 50, "height": 40}],
           "categories": [{"id": 3, "name": "dog"}, {"id": 1, "name": "cat"}],
           "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [1, 2, 10, 20], "iscrowd": 0},
                           {"id": 2, "image_id": 7, "category_id": 1, "bbox": [5, 5, 4, 4], "iscrowd": 1}]}
    p = tmp_path / "c.json"
    p.write_text(json.dumps(doc))
    ds = load_coco(p)
    r = ds.records[0]
    assert ds.classes == ("1", "3") and ds.class_names == ("cat", "dog") and r.image_id == "7"
    np.testing.assert_array_equal(r.boxes, [[1, 2, 11, 22], [5, 5, 9, 9]])  # xywh -> xyxy
    assert r.labels.tolist() == [1, 0] and r.ignore.tolist() == [False, True]
    from detector.evaluation.coco import coco_ground_truth
    back = coco_ground_truth(ds)["annotations"]
    assert [a["bbox"] for a in back] == [[1, 2, 10, 20], [5, 5, 4, 4]] and back[1]["iscrowd"] == 1
    doc["annotations"][0]["bbox"] = [1, 2, 0, 20]
    p.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match="degenerate bbox"):
        load_coco(p)
    assert len(load_coco(p, skip_bad=True).records[0]) == 1
    p.write_text("{")
    with pytest.raises(DatasetError, match="c.json: malformed JSON"):
        load_coco(p)


def test_cli_options(shared_data):
    ap = argparse.ArgumentParser()
    add_dataset_arguments(ap)
    root = shared_data / "bccd" / "BCCD"
    ds = dataset_from_args(ap.parse_args(["--dataset", "voc", "--root", str(root), "--split", "test",
                                          "--skip-bad", "--limit", "3"]))
    assert len(ds) == 3
    with pytest.raises(DatasetError, match="needs --devkit"):
        dataset_from_args(ap.parse_args(["--dataset", "ilsvrc"]))
