"""Shared test fixtures: where ../shared is, skipping cleanly when it is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import detector  # noqa: F401 - sets ORT_DISABLE_TELEMETRY before any test module imports onnxruntime

REPO = Path(__file__).resolve().parents[1]


def load_tool(name: str):
    """The module ``tools/<name>.py`` (tools are scripts, not a package), for calling its ``main(argv)``."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def split_image(tmp_path: Path):
    """A random 80x100 PNG as an ImageRecord (no ground truth), three boxes in it and a small warp: the input
    of ``classify_split`` tests that compare backends on the same regions."""
    import cv2
    import numpy as np

    from detector.config import WarpConfig
    from detector.structures import ImageRecord

    img = np.random.default_rng(0).integers(0, 255, (80, 100, 3)).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    rec = ImageRecord("a", tmp_path / "a.png", 80, 100, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    boxes = np.array([[0, 0, 50, 40], [10, 20, 90, 70], [30, 5, 60, 75]], np.float32)
    return rec, boxes, WarpConfig(size=64, context_pad=4)


def patch_images(tmp_path: Path, n: int) -> list[Path]:
    """``n`` random 60x80 PNGs, each with a green rectangle (something for Selective Search to find)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        arr = (rng.random((60, 80, 3)) * 255).astype(np.uint8)
        arr[10 + i:40, 15:50 + 5 * i] = (30, 200, 60)
        paths.append(tmp_path / f"im{i}.png")
        Image.fromarray(arr).save(paths[-1])
    return paths


def shared_root() -> Path:
    """``$GOOGLENET_RCNN_SHARED`` or ``<repo>/../shared``."""
    return Path(os.environ.get("GOOGLENET_RCNN_SHARED", REPO.parent / "shared"))


def weights_path() -> Path:
    env = os.environ.get("GOOGLENET_WEIGHTS")
    return Path(env) if env else shared_root() / "weights" / "bvlc_googlenet" / "bvlc_googlenet.npz"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = shared_root() / "data"
    if not d.is_dir():
        pytest.skip(f"shared data not found at {d} (set GOOGLENET_RCNN_SHARED)")
    return d


@pytest.fixture(scope="session")
def bvlc_weights() -> Path:
    p = weights_path()
    if not p.is_file():
        pytest.skip(f"BVLC GoogLeNet weights not found at {p} (set GOOGLENET_WEIGHTS)")
    return p


@pytest.fixture(autouse=True)
def _restore_root_logging():
    """Undo a tool's ``setup_logging`` after each test.

    Tools called in-process (``main(argv)``) put a plain ``StreamHandler`` on pytest's captured stderr,
    which pytest closes after the test; left in place, every later log record printed a "Logging error"
    traceback. pytest's own handlers are subclasses and are left to pytest."""
    import logging

    root = logging.getLogger()
    before, level = set(root.handlers), root.level
    yield
    for h in root.handlers[:]:
        if h not in before and type(h) in (logging.StreamHandler, logging.FileHandler):
            root.removeHandler(h)
            h.close()
    root.setLevel(level)
