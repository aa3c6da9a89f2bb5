"""Proposal recall / MABO against hand-computed values."""
import numpy as np
import pytest

from detector.evaluation.recall import best_overlaps, ilsvrc_thresholds, proposal_recall
from detector.structures import ImageRecord


def test_hand_computed_recall_and_mabo():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    rec = ImageRecord("a", None, 40, 40, gt, [0, 1])
    # first proposal matches gt0 exactly; second overlaps gt1 by 5x10 = 50 / 150 = 1/3
    props = {"a": np.array([[0, 0, 10, 10], [25, 20, 35, 30]], np.float32)}
    r = proposal_recall([rec], props)
    assert r.recall == pytest.approx(0.5)
    assert r.mabo == pytest.approx((1.0 + 1 / 3) / 2)  # mean over the two classes
    assert r.boxes_per_image == 2
    assert r.counts == [1, 2] and r.recall_at == pytest.approx([0.5, 0.5])


def test_ignored_gt_excluded_and_empty_proposals():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    rec = ImageRecord("a", None, 40, 40, gt, [0, 0], ignore=[False, True])
    r = proposal_recall([rec], {"a": np.zeros((0, 4), np.float32)})
    assert r.num_gt == 1 and r.recall == 0.0 and r.boxes_per_image == 0


def test_ilsvrc_small_object_threshold():
    # 10x10 box: 100 / (20 * 20) = 0.25 < 0.5
    assert ilsvrc_thresholds(np.array([[0, 0, 10, 10]], np.float32))[0] == pytest.approx(0.25)
    gt = np.array([[0, 0, 10, 10]], np.float32)
    rec = ImageRecord("a", None, 40, 40, gt, [0])
    prop = {"a": np.array([[0, 0, 10, 3]], np.float32)}  # IoU 0.3
    assert proposal_recall([rec], prop).recall == 0.0
    assert proposal_recall([rec], prop, ilsvrc_small=True).recall == 1.0


def test_best_overlaps_prefix():
    gt = np.array([[0, 0, 10, 10]], np.float32)
    props = np.array([[0, 0, 5, 10], [0, 0, 10, 10]], np.float32)
    assert best_overlaps(gt, props, [1, 2]).ravel().tolist() == pytest.approx([0.5, 1.0])
