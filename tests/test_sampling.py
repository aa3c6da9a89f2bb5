"""R-CNN region labelling and minibatch sampling on hand-made boxes."""
from __future__ import annotations

import numpy as np
import pytest

from detector.training.sampling import RegionSampler, label_regions

GT = np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32)
GT_LABELS = np.array([2, 0])


def test_labels_by_best_iou():
    props = np.array([
        [0, 0, 10, 5],     # IoU 0.5 with gt0 -> fg class 2 -> label 3
        [0, 0, 10, 4],     # IoU 0.4 -> background
        [20, 20, 40, 30],  # IoU 0.5 with gt1 -> fg class 0 -> label 1
        [100, 100, 110, 110],  # IoU 0 -> background
        [5, 5, 5, 9],      # zero width -> dropped
    ], np.float32)
    pool = label_regions(props, GT, GT_LABELS)
    assert len(pool.boxes) == 2 + 4  # ground truth first, the zero-size proposal dropped
    np.testing.assert_array_equal(pool.labels, [3, 1, 3, 0, 1, 0])
    np.testing.assert_allclose(pool.max_iou, [1, 1, 0.5, 0.4, 0.5, 0], atol=1e-6)


def test_bg_lower_bound_and_gap():
    props = np.array([[0, 0, 10, 4], [100, 100, 110, 110]], np.float32)
    pool = label_regions(props, GT, GT_LABELS, bg_low=0.1, include_gt=False)
    np.testing.assert_array_equal(pool.labels, [0, -1])  # IoU 0 < bg_low: unused
    pool = label_regions(props, GT, GT_LABELS, bg_high=0.3, include_gt=False)
    np.testing.assert_array_equal(pool.labels, [-1, 0])  # IoU 0.4 in [0.3, 0.5): unused


def test_ignored_gt_and_no_gt():
    props = np.array([[0, 0, 10, 5]], np.float32)
    pool = label_regions(props, GT, GT_LABELS, gt_ignore=np.array([True, False]))
    np.testing.assert_array_equal(pool.labels, [1, 0])  # only gt1 is a candidate; the proposal is bg
    pool = label_regions(props, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    np.testing.assert_array_equal(pool.labels, [0])


def _pools():
    rng = np.random.default_rng(0)
    pools = []
    for i in range(5):
        xy = rng.uniform(0, 200, (50, 2)).astype(np.float32)
        props = np.concatenate([xy, xy + rng.uniform(5, 60, (50, 2)).astype(np.float32)], 1)
        pools.append(label_regions(props, GT + 3 * i, GT_LABELS))
    return pools


def test_minibatch_ratio_and_determinism():
    pools = _pools()
    s = RegionSampler(pools, batch_size=128, fg_fraction=0.25, seed=7)
    b = s.sample(3)
    assert len(b) == 128 and (b.labels > 0).sum() == 32 and (b.labels == 0).sum() == 96
    assert np.all(np.diff(b.image_index) >= 0)  # grouped by image
    assert len(np.unique(b.image_index)) > 1    # drawn across images
    assert 20 < b.flip.sum() < 108
    for k in range(len(b)):  # every drawn box carries its pool's label
        pool = pools[b.image_index[k]]
        j = np.flatnonzero((pool.boxes == b.boxes[k]).all(1))
        assert b.labels[k] in pool.labels[j]
    b2 = RegionSampler(pools, batch_size=128, seed=7).sample(3)
    np.testing.assert_array_equal(b.boxes, b2.boxes)
    np.testing.assert_array_equal(b.flip, b2.flip)
    assert not np.array_equal(RegionSampler(pools, seed=8).sample(3).boxes, b.boxes)
    assert not np.array_equal(s.sample(4).boxes, b.boxes)


def test_sampler_without_foreground_and_state():
    pools = [label_regions(np.array([[50, 50, 60, 60]], np.float32), np.zeros((0, 4)), np.zeros(0))]
    s = RegionSampler(pools, batch_size=16, hflip=False, seed=1)
    b = s.sample(0)
    assert (b.labels == 0).all() and not b.flip.any()
    other = RegionSampler(_pools(), seed=3)
    with pytest.raises(ValueError, match="different data"):
        s.load_state_dict(other.state_dict())
    with pytest.raises(ValueError, match="no foreground or background"):
        RegionSampler([label_regions(np.zeros((0, 4)), np.zeros((0, 4)), np.zeros(0))])
