"""Region-classification backends give the same outputs as torch eager fp32 (within stated tolerances).

Speed is measured in tools/benchmark.py, never here. Skipped when onnxruntime is not installed.
"""
import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from detector.backends import OrtMember, export_onnx, onnx_members, quantize_int8  # noqa: E402
from detector.classifier import RegionClassifier  # noqa: E402
from detector.googlenet import GoogLeNet  # noqa: E402
from detector.weights import BVLC_PREPROCESS  # noqa: E402


def _member(tiny: bool = False):
    torch.manual_seed(0)
    if tiny:  # for cache/refusal logic: a small stand-in network keeps the test fast
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=4), torch.nn.AdaptiveAvgPool2d(1),
                                  torch.nn.Flatten(), torch.nn.Linear(4, 4)).eval()
    else:  # the real architecture (LRN, ceil-mode pools, 5x5 branches) at a small input size
        net = GoogLeNet(num_classes=4).eval()
    return RegionClassifier(net, ["a", "b", "c"], ["A", "B", "C"], BVLC_PREPROCESS, source="random")


def test_onnx_fp32_matches_torch_and_int8_stays_close(tmp_path):
    m = _member()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(6, 3, 96, 96, generator=g) * 255 - 120
    with torch.no_grad():
        ref = m(x).numpy()
    [om] = onnx_members([m], "onnx", tmp_path, size=96)
    got = om(x).numpy()
    assert got.shape == (6, 4)
    np.testing.assert_allclose(got, ref, atol=1e-4)
    q = quantize_int8(tmp_path / next(p.name for p in tmp_path.glob("*_fp32.onnx")), tmp_path / "q.onnx",
                      [x[:3].numpy(), x[3:].numpy()])
    qp = OrtMember(q, m)(x).numpy()
    np.testing.assert_allclose(qp.sum(1), 1.0, atol=1e-4)  # still a softmax over K + 1
    assert np.abs(qp - ref).max() < 0.15  # int8: approximate by construction


def test_export_is_cached_by_weights(tmp_path):
    m = _member(tiny=True)
    onnx_members([m], "onnx", tmp_path, size=32)
    files = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    onnx_members([m], "onnx", tmp_path, size=32)
    assert files == {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    with torch.no_grad():
        m.net[3].bias.add_(1.0)  # changed weights -> a new export
    onnx_members([m], "onnx", tmp_path, size=32)
    assert len(list(tmp_path.glob("*_fp32.onnx"))) == 2


def test_export_refuses_mismatch(tmp_path, monkeypatch):
    m = _member(tiny=True)
    import detector.backends as b
    monkeypatch.setattr(b, "EXPORT_ATOL", -1.0)  # any difference at all is now too much
    with pytest.raises(RuntimeError, match="differs from torch"):
        export_onnx(m, tmp_path / "m.onnx", size=32)
    assert not (tmp_path / "m.onnx").exists()
