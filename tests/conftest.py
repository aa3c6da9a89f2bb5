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
