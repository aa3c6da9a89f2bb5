import numpy as np
import pytest

from detector import boxes as B
from detector.structures import Detections, ImageRecord


def test_iou_hand_computed():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[5, 5, 15, 15], [10, 10, 20, 20], [0, 0, 10, 10]], np.float32)
    # overlap 5x5 = 25, union 100 + 100 - 25 = 175; touching edges overlap 0; identical 1
    np.testing.assert_allclose(B.iou_matrix(a, b), [[25 / 175, 0.0, 1.0]])


def test_iou_empty_shapes():
    assert B.iou_matrix(B.empty_boxes(), np.zeros((3, 4))).shape == (0, 3)
    assert B.iou_matrix(np.zeros((2, 4)), B.empty_boxes()).shape == (2, 0)


def test_zero_area_pair_has_iou_zero():
    z = np.array([[3, 3, 3, 3]], np.float32)
    assert B.iou_matrix(z, z)[0, 0] == 0.0


def test_one_based_round_trip_and_widths():
    xml = np.array([[1, 1, 10, 20], [5.5, 6, 7, 8]], np.float64)
    ours = B.from_one_based_inclusive(xml)
    # inclusive width xmax - xmin + 1 equals our x2 - x1
    assert ours[0].tolist() == [0, 0, 10, 20]
    np.testing.assert_allclose(B.to_one_based_inclusive(ours), xml)


def test_xywh_round_trip():
    xywh = np.array([[3, 4, 10, 5]], np.float32)
    xyxy = B.xywh_to_xyxy(xywh)
    assert xyxy.tolist() == [[3, 4, 13, 9]]
    np.testing.assert_allclose(B.xyxy_to_xywh(xyxy), xywh)


def test_clip_flip_scale():
    b = np.array([[-5, 2, 30, 50]], np.float32)
    assert B.clip_boxes(b, 20, 40).tolist() == [[0, 2, 20, 40]]
    f = B.hflip_boxes(np.array([[2, 0, 5, 1]], np.float32), 10)
    assert f.tolist() == [[5, 0, 8, 1]]
    assert B.hflip_boxes(f, 10).tolist() == [[2, 0, 5, 1]]
    assert B.scale_boxes(np.array([[1, 2, 3, 4]], np.float32), 2, 0.5).tolist() == [[2, 1, 6, 2]]


def test_nms_and_batched_nms():
    b = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32)
    s = np.array([0.9, 0.8, 0.7], np.float32)
    # IoU(0,1) = 90/110 = 0.818 > 0.3 -> suppressed
    assert B.nms(b, s, 0.3).tolist() == [0, 2]
    assert B.batched_nms(b, s, np.array([0, 1, 0]), 0.3).tolist() == [0, 1, 2]
    assert B.nms(B.empty_boxes(), np.zeros(0), 0.3).shape == (0,)


@pytest.mark.parametrize("n", [300, 2500])  # torchvision: one shifted NMS up to 1,000 boxes, per class beyond
def test_nms_gives_torchvisions_indices(n):
    """The operator loaded without the torchvision package gives torchvision.ops' own answers: random boxes
    of 30 classes, scores with ties, three thresholds."""
    import torch
    import torchvision.ops

    rng = np.random.default_rng(n)
    xy = rng.uniform(0, 400, (n, 2)).astype(np.float32)
    wh = rng.uniform(5, 150, (n, 2)).astype(np.float32)
    b = np.concatenate([xy, xy + wh], axis=1)
    s = np.round(rng.random(n), 2).astype(np.float32)  # many ties
    labels = rng.integers(0, 30, n)
    for thr in (0.3, 0.5, 0.7):
        want = torchvision.ops.batched_nms(torch.from_numpy(b), torch.from_numpy(s), torch.from_numpy(labels), thr)
        assert B.batched_nms(b, s, labels, thr).tolist() == want.tolist()
        want = torchvision.ops.nms(torch.from_numpy(b), torch.from_numpy(s), thr)
        assert B.nms(b, s, thr).tolist() == want.tolist()


def test_loading_nms_does_not_import_torchvision():
    """Detector.__init__'s load_nms: the operator without ``import torchvision`` (1.7-1.9 s, torch._dynamo)."""
    import subprocess
    import sys

    code = ("import sys; from detector.boxes import load_nms, nms; load_nms(); import numpy as np; "
            "print(nms(np.array([[0, 0, 10, 10], [1, 0, 11, 10]], np.float32), np.array([.9, .8]), .3).tolist(), "
            "'torchvision' in sys.modules, 'torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[0]", "False", "False"]


def test_valid_mask_and_bad_shape():
    b = np.array([[0, 0, 0, 5], [0, 0, 5, 5], [0, 0, np.nan, 5]], np.float32)
    assert B.valid_mask(b).tolist() == [False, True, False]
    with pytest.raises(ValueError):
        B.as_boxes(np.zeros((3, 3)))


def test_records_validate_lengths():
    with pytest.raises(ValueError):
        ImageRecord("a", None, 10, 10, np.zeros((2, 4)), np.zeros(1))
    d = Detections.empty()
    assert len(d) == 0 and d.boxes.shape == (0, 4)
