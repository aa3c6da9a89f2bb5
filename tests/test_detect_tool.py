"""tools/detect.py end to end: odd image formats, unreadable files (one error line, non-zero exit, the
other images still processed), pictures and JSON written. A tiny colour classifier stands in for
GoogLeNet (substituted in the tool's namespace) so the test is fast; whole-image proposals."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from detector.classifier import Ensemble, RegionClassifier

REPO = Path(__file__).resolve().parents[1]
IDENTITY = SimpleNamespace(channel_order="RGB", scale=255.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class BrightNet(nn.Module):
    """Logits [0, mean brightness / 20]: bright regions score high for class 'bright'."""

    def forward(self, x):
        return torch.stack([torch.zeros(len(x)), x.mean(dim=(1, 2, 3)) / 20], dim=1)


@pytest.fixture()
def tool(monkeypatch):
    mod = load_tool("detect")
    ens = Ensemble([RegionClassifier(BrightNet(), ("n0001",), ("bright thing",), IDENTITY)],
                   batch_size=4, channels_last=False)
    monkeypatch.setattr(mod, "build_classifier", lambda *a, **k: ens)
    return mod


def write_inputs(d: Path) -> dict[str, Path]:
    rgb = np.full((40, 60, 3), 220, np.uint8)
    files = {
        "rgb": d / "rgb.jpg",
        "gray": d / "gray.png",
        "cmyk": d / "cmyk.jpg",
        "alpha": d / "alpha.png",
        "deep": d / "deep16.png",
        "broken": d / "broken.jpg",
    }
    Image.fromarray(rgb).save(files["rgb"])
    Image.fromarray(np.full((30, 50), 200, np.uint8), mode="L").save(files["gray"])
    Image.fromarray(rgb).convert("CMYK").save(files["cmyk"])
    rgba = np.dstack([rgb, np.full((40, 60), 128, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(files["alpha"])
    Image.fromarray(np.full((20, 30), 50000, np.uint16)).save(files["deep"])  # 16-bit grey
    files["broken"].write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    return files


def test_formats_errors_outputs(tool, tmp_path, capsys):
    files = write_inputs(tmp_path)
    out = tmp_path / "pics"
    argv = [str(files[k]) for k in ("rgb", "broken", "gray", "cmyk", "alpha", "deep")]
    argv += [str(tmp_path / "missing.jpg"), "--whole-image", "--out", str(out), "--score-threshold", "0.5"]
    rc = tool.main(argv)
    cap = capsys.readouterr()
    assert rc == 1  # two bad files -> non-zero exit, after the others were processed
    errors = [l for l in cap.err.splitlines() if l.startswith("error:")]
    assert len(errors) == 2
    assert "broken.jpg" in errors[0] and "missing.jpg" in errors[1]
    lines = [l.split("\t") for l in cap.out.splitlines()]
    assert sorted(Path(l[0]).stem for l in lines) == ["alpha", "cmyk", "deep16", "gray", "rgb"]
    for path, name, score, box in lines:
        assert name == "bright thing" and float(score) > 0.5
        size = Image.open(path).size
        assert [float(v) for v in box.split()] == [0.0, 0.0, float(size[0]), float(size[1])]
    assert sorted(p.name for p in out.iterdir()) == ["alpha.png", "cmyk.jpg", "deep16.png", "gray.png", "rgb.jpg"]
    assert Image.open(out / "gray.png").size == (50, 30)


def test_folder_input_and_nothing_detected(tool, tmp_path, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(d / "a.png")   # black: score 1/2 < 0.9
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(d / "b.jpg")
    (d / "notes.txt").write_text("not an image")
    rc = tool.main([str(d), "--whole-image", "--score-threshold", "0.9"])
    assert rc == 0
    assert capsys.readouterr().out == ""


def test_usage_errors_are_one_line(tmp_path, capsys):
    from detector.cli import run

    mod = load_tool("detect")
    assert run(mod.main, [str(tmp_path / "x.jpg"), "--config", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "nope.yaml" in err[0]
