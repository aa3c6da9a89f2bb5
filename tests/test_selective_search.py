"""Selective Search: determinism, coordinate mapping after resize, odd inputs, hierarchy configuration."""
import subprocess
import sys

import numpy as np
import pytest

from detector.boxes import iou_matrix
from detector.config import SelectiveSearchConfig
from proposals.selective_search import hierarchy_spec, selective_search


def _scene(w=800, h=600):
    """Flat background with three flat-colour rectangles (library xyxy) at known places."""
    img = np.full((h, w, 3), (40, 120, 40), np.uint8)
    rects = np.array([[100, 80, 300, 260], [420, 300, 700, 540], [550, 60, 760, 200]], np.float32)
    for (x1, y1, x2, y2), col in zip(rects.astype(int), [(230, 30, 30), (30, 30, 230), (240, 240, 40)]):
        img[y1:y2, x1:x2] = col
    return img, rects


def test_hierarchies_follow_rcnn_and_paper():
    assert hierarchy_spec(SelectiveSearchConfig(superpixel_scale=1.0)) == (("HSV", "Lab"), ("CTSF", "TSF"), (50, 100))
    assert hierarchy_spec(SelectiveSearchConfig())[2] == (100, 200)  # paper: superpixels 2x
    spaces, strategies, ks = hierarchy_spec(SelectiveSearchConfig(mode="quality", superpixel_scale=1.0))
    assert len(spaces) == 5 and len(strategies) == 4 and ks == (50, 100, 150, 300)


def test_known_rectangles_recovered_after_resize():
    img, rects = _scene()  # 800 px wide -> resized to 500 and mapped back
    boxes = selective_search(img, SelectiveSearchConfig())
    assert boxes.dtype == np.float32 and boxes.shape[1] == 4
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 800).all() and (boxes[:, 3] <= 600).all()
    best = iou_matrix(rects, boxes).max(axis=1)
    assert (best > 0.9).all(), best


def test_small_boxes_dropped_and_no_duplicates():
    img, _ = _scene()
    cfg = SelectiveSearchConfig(superpixel_scale=1.0)
    boxes = selective_search(img, cfg)
    scale = 500 / 800
    assert ((boxes[:, 2] - boxes[:, 0]) * scale >= cfg.min_box_size - 1e-3).all()
    assert len(np.unique(boxes, axis=0)) == len(boxes)


def test_deterministic_across_calls_and_processes(tmp_path):
    rng = np.random.default_rng(3)
    img = (rng.random((120, 160, 3)) * 255).astype(np.uint8)
    img[20:80, 30:100] = 200
    cfg = SelectiveSearchConfig(superpixel_scale=1.0)
    a = selective_search(img, cfg)
    b = selective_search(img, cfg)
    np.testing.assert_array_equal(a, b)
    np.save(tmp_path / "img.npy", img)
    code = ("import numpy as np, sys; from detector.config import SelectiveSearchConfig as C; "
            "from proposals.selective_search import selective_search as s; "
            f"np.save(sys.argv[2], s(np.load(sys.argv[1]), C(superpixel_scale=1.0)))")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "img.npy"), str(tmp_path / "out.npy")], check=True)
    np.testing.assert_array_equal(a, np.load(tmp_path / "out.npy"))


def test_tiny_and_odd_images():
    cfg = SelectiveSearchConfig()
    tiny = np.zeros((5, 4, 3), np.uint8)  # resized to width 500 -> 625 px tall: still processed
    assert selective_search(tiny, cfg).shape[1] == 4
    assert selective_search(tiny, SelectiveSearchConfig(resize_width=0)).shape == (0, 4)  # < 20 px, no resize
    tall = (np.random.default_rng(0).random((900, 30, 3)) * 255).astype(np.uint8)
    b = selective_search(tall, cfg)
    assert (b[:, 2] <= 30 + 1e-3).all() and (b[:, 3] <= 900 + 1e-3).all()
    with pytest.raises(ValueError):
        selective_search(np.zeros((10, 10), np.uint8), cfg)  # not RGB
    with pytest.raises(ValueError):
        selective_search(tiny, SelectiveSearchConfig(mode="bogus"))


def test_superpixels_2x_gives_fewer_boxes():
    import skimage.data
    img = skimage.data.chelsea()
    n1 = len(selective_search(img, SelectiveSearchConfig(superpixel_scale=1.0)))
    n2 = len(selective_search(img, SelectiveSearchConfig(superpixel_scale=2.0)))
    assert n2 < 0.75 * n1


def test_opencv_failure_names_image_or_falls_back(monkeypatch):
    import cv2

    import proposals.selective_search as ss

    def boom(bgr, cfg):
        raise cv2.error("synthetic OpenCV failure")

    monkeypatch.setattr(ss, "_run_opencv", boom)
    img = np.zeros((60, 80, 3), np.uint8)
    with pytest.raises(ss.SelectiveSearchError, match="photo_7.jpg"):
        selective_search(img, SelectiveSearchConfig(), name="photo_7.jpg")
    whole = selective_search(img, SelectiveSearchConfig(fallback_whole_image=True), name="photo_7.jpg")
    np.testing.assert_array_equal(whole, np.array([[0, 0, 80, 60]], np.float32))  # original coordinates


def _python(code: str, drop_env: str = "ORT_DISABLE_TELEMETRY") -> subprocess.CompletedProcess:
    import os

    env = {k: v for k, v in os.environ.items() if k != drop_env}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_onnxruntime_imported_after_detector_leaves_rand_alone():
    """ONNX Runtime 1.32's telemetry thread calls rand() ~9 s after import and every 5-9 s after; that reordered
    Selective Search boxes. Importing ``detector`` first must keep the thread from starting: nothing else in
    the process may take values from the srand(0) stream during 12 s (with the thread, this prints False)."""
    pytest.importorskip("onnxruntime")
    code = ("import ctypes, time, detector, onnxruntime\n"
            "libc = ctypes.CDLL(None)\n"
            "libc.srand(0); first = libc.rand()\n"
            "libc.srand(0); time.sleep(12); print(libc.rand() == first)\n")
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def test_onnxruntime_imported_first_is_warned_about():
    pytest.importorskip("onnxruntime")
    code = ("import numpy as np, onnxruntime, detector\n"
            "from detector.config import SelectiveSearchConfig\n"
            "from proposals.selective_search import selective_search\n"
            "img = np.zeros((60, 80, 3), np.uint8); img[10:40, 10:50] = 200\n"
            "for _ in range(2): selective_search(img, SelectiveSearchConfig())\n")
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("ORT_DISABLE_TELEMETRY=1 before importing it") == 1  # once, not per call


def test_check_ss_order_tool_prints_both_settings(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from PIL import Image

    from conftest import load_tool

    img, _ = _scene(200, 150)
    Image.fromarray(img).save(tmp_path / "scene.png")
    assert load_tool("check_ss_order").main([str(tmp_path / "scene.png"), "--seconds", "0.5"]) == 0
    rows = {line[:52].strip(): line[52:].split() for line in capsys.readouterr().out.splitlines()[1:]}
    calls, reordered, other_set, boxes = map(int, rows["onnxruntime imported after detector (telemetry off)"])
    assert calls >= 1 and reordered == 0 and other_set == 0 and boxes >= 3
    assert "onnxruntime imported first, telemetry on" in rows
