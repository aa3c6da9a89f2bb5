"""Region classifier and ensemble: averaging with hand-computed softmaxes, streaming in batches,
consistency checks, checkpoint loading (strict), the embedded default on real weights."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from detector.classifier import Ensemble, RegionClassifier, build_classifier, find_meta_det
from detector.cli import UserError
from detector.config import ModelConfig, WarpConfig
from detector.warp import prepare_image

IDENTITY = SimpleNamespace(channel_order="RGB", scale=255.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


class ConstNet(nn.Module):
    """Returns the same logits for every region."""

    def __init__(self, logits):
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits, dtype=torch.float32))

    def forward(self, x):
        return self.logits.expand(len(x), -1)


class MeanNet(nn.Module):
    """Logits [0, mean of the region / 100]: depends on the region, so batching mistakes show."""

    def forward(self, x):
        return torch.stack([torch.zeros(len(x)), x.mean(dim=(1, 2, 3)) / 100], dim=1)


def member(net, classes=("a",), pre=IDENTITY, source="m"):
    return RegionClassifier(net, classes, [c.upper() for c in classes], pre, source=source)


def test_ensemble_averages_softmax_probabilities():
    # logits [0, ln 3] -> softmax [1/4, 3/4]; logits [0, 0] -> [1/2, 1/2]; average [3/8, 5/8]
    ens = Ensemble([member(ConstNet([0.0, math.log(3.0)])), member(ConstNet([0.0, 0.0]))], channels_last=False)
    p = ens.predict(torch.zeros(2, 3, 8, 8))
    np.testing.assert_allclose(p, [[0.375, 0.625], [0.375, 0.625]], atol=1e-6)
    assert p.dtype == np.float32 and ens.predict(torch.zeros(0, 3, 8, 8)).shape == (0, 2)
    # averaging probabilities, not logits: the logit average [0, ln 3 / 2] would give 0.634 instead
    assert abs(p[0, 1] - 1 / (1 + 3 ** -0.5)) > 0.005


def test_head_replaces_softmax_and_output_width_is_checked():
    class Half(nn.Module):
        def forward(self, logits):
            return torch.full((len(logits), 3), 1 / 3)

    m = RegionClassifier(ConstNet([1.0, 2.0, 3.0, 4.0]), ("a", "b"), ("A", "B"), IDENTITY, head=Half())
    np.testing.assert_allclose(Ensemble([m], channels_last=False).predict(torch.zeros(1, 3, 4, 4)), [[1 / 3] * 3])
    bad = RegionClassifier(ConstNet([1.0, 2.0, 3.0]), ("a",), ("A",), IDENTITY, source="bad.pt")
    with pytest.raises(ValueError, match="bad.pt gives 3 outputs, expected K \\+ 1 = 2"):
        Ensemble([bad], channels_last=False).predict(torch.zeros(1, 3, 4, 4))


def test_members_must_agree():
    with pytest.raises(UserError, match="disagree on classes"):
        Ensemble([member(ConstNet([0.0, 0.0])), member(ConstNet([0.0, 0.0, 0.0]), classes=("a", "b"))])
    other = SimpleNamespace(channel_order="BGR", scale=255.0, mean=(104.0, 117.0, 123.0), std=(1.0, 1.0, 1.0))
    with pytest.raises(UserError, match="same preprocessing"):
        Ensemble([member(ConstNet([0.0, 0.0])), member(ConstNet([0.0, 0.0]), pre=other)])
    with pytest.raises(UserError, match="backend"):
        Ensemble([member(ConstNet([0.0, 0.0]))], backend="tpu")
    with pytest.raises(ValueError, match="at least one"):
        Ensemble([])


@pytest.mark.parametrize("channels_last", [False, True])
def test_streaming_batches_equal_one_batch(channels_last):
    rng = np.random.default_rng(0)
    img = prepare_image(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8), IDENTITY)
    boxes = np.array([[0, 0, 10, 10], [5, 5, 45, 35], [20, 0, 50, 40], [1, 2, 3, 4], [0, 0, 50, 40]], np.float32)
    cfg = WarpConfig(size=16, context_pad=2)
    small = Ensemble([member(MeanNet())], batch_size=2, channels_last=channels_last)
    big = Ensemble([member(MeanNet())], batch_size=100, channels_last=channels_last)
    a = small.classify_regions(img, boxes, cfg)
    b = big.classify_regions(img, boxes, cfg)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert len(set(np.round(a[:, 1], 5))) == 5  # regions really differ
    assert small.timings.regions == 5
    assert small.classify_regions(img, np.zeros((0, 4), np.float32), cfg).shape == (0, 2)


def test_meta_det_lookup_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("GOOGLENET_RCNN_DEVKIT", raising=False)
    monkeypatch.delenv("GOOGLENET_RCNN_SHARED", raising=False)
    with pytest.raises(UserError, match="--devkit"):
        find_meta_det(None)
    with pytest.raises(UserError, match="no meta_det.mat there"):
        find_meta_det(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "meta_det.mat").write_bytes(b"x")
    assert find_meta_det(tmp_path) == tmp_path / "data" / "meta_det.mat"
    monkeypatch.setenv("GOOGLENET_RCNN_DEVKIT", str(tmp_path))
    assert find_meta_det(None) == tmp_path / "data" / "meta_det.mat"


def test_missing_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="checkpoint not found"):
        build_classifier(ModelConfig(checkpoints=[str(tmp_path / "nope.pt")]))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable checkpoint"):
        build_classifier(ModelConfig(checkpoints=[str(bad)]))


def _write_checkpoint(path, classes=("n01", "n02"), aux=False, drop_key=None):
    from detector.googlenet import GoogLeNet
    from detector.training import checkpoint as ck

    torch.manual_seed(0)
    net = GoogLeNet(num_classes=len(classes) + 1, aux_logits=aux)
    state = net.state_dict()
    if drop_key:
        state.pop(drop_key)
    ck.save_atomic({"format": ck.FORMAT, "format_version": ck.FORMAT_VERSION,
                    "arch": ck.architecture_id("bvlc", aux), "model": state, "classes": list(classes),
                    "class_names": [c.upper() for c in classes], "config": {"warp": {"mode": "square"}}}, path)
    return net


def test_checkpoints_make_an_ensemble(tmp_path):
    net = _write_checkpoint(tmp_path / "a.pt")
    _write_checkpoint(tmp_path / "b.pt", aux=True)
    ens = build_classifier(ModelConfig(checkpoints=[str(tmp_path / "a.pt"), str(tmp_path / "b.pt")],
                                       batch_size=2), WarpConfig())
    assert ens.classes == ("n01", "n02") and ens.class_names == ("N01", "N02")
    x = torch.randn(2, 3, 64, 64)  # adaptive average pooling: any size works, small is fast
    p = ens.predict(x)
    assert p.shape == (2, 3)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    with torch.inference_mode():  # member a alone = the saved network's softmax
        expected = torch.softmax(net.eval()(x), dim=1).numpy()
    np.testing.assert_allclose(ens.members[0](x).detach().numpy(), expected, atol=1e-4)


def test_checkpoint_errors(tmp_path):
    _write_checkpoint(tmp_path / "short.pt", drop_key="classifier.bias")
    with pytest.raises(UserError, match="missing \\['classifier.bias'\\]"):
        build_classifier(ModelConfig(checkpoints=[str(tmp_path / "short.pt")]))
    _write_checkpoint(tmp_path / "two.pt")
    _write_checkpoint(tmp_path / "three.pt", classes=("n01", "n02", "n03"))
    with pytest.raises(UserError, match="disagree on classes"):
        build_classifier(ModelConfig(checkpoints=[str(tmp_path / "two.pt"), str(tmp_path / "three.pt")]))


@pytest.mark.parametrize("channels_last", [False, True])
def test_channel_lrn_equals_torch_lrn(channels_last):
    from detector.classifier import ChannelLRN, fast_lrn, plain_lrn

    torch.manual_seed(0)
    x = torch.randn(2, 12, 7, 9) * 40  # BVLC activations are large: the normaliser matters
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    for beta in (0.75, 0.5):
        lrn = nn.LocalResponseNorm(5, alpha=1e-4, beta=beta, k=1.0)
        for nhwc in (False, True):  # the eager form and the ONNX export's
            torch.testing.assert_close(ChannelLRN(lrn, nhwc)(x), lrn(x), rtol=1e-5, atol=1e-5)
        # inference on fp32 runs the fused kernel (numba); with autograd the torch operators, gradients intact
        with torch.inference_mode():
            torch.testing.assert_close(ChannelLRN(lrn)(x), lrn(x), rtol=1e-5, atol=1e-5)
        xg = x.clone().requires_grad_(True)
        ChannelLRN(lrn)(xg).square().sum().backward()
        xr = x.clone().requires_grad_(True)
        lrn(xr).square().sum().backward()
        torch.testing.assert_close(xg.grad, xr.grad, rtol=1e-4, atol=1e-4)
    seq = nn.Sequential(nn.Conv2d(12, 12, 1), nn.Sequential(nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0)))
    fast_lrn(seq)
    assert isinstance(seq[1][0], ChannelLRN)
    fast_lrn(seq)  # idempotent (an Ensemble built twice over the same members): no ChannelLRN inside one
    assert isinstance(seq[1][0].lrn, nn.LocalResponseNorm)
    torch.testing.assert_close(seq[1](x[:, :12]), nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0)(x), rtol=1e-5, atol=1e-5)
    fast_lrn(seq, nhwc=True)  # an existing ChannelLRN is switched to the form asked for
    assert seq[1][0].nhwc and isinstance(seq[1][0].lrn, nn.LocalResponseNorm)
    plain_lrn(seq)
    assert isinstance(seq[1][0], nn.LocalResponseNorm)


def test_channel_lrn_uses_the_fused_kernel_only_where_it_can(monkeypatch):
    """The kernel serves fp32 CPU inference; bf16 (autocast), autograd and ONNX tracing keep torch operators."""
    pytest.importorskip("numba")
    import detector.classifier as c

    calls = []
    real = c._lrn_kernel()
    monkeypatch.setattr(c, "_lrn_kernel", lambda: lambda *a, **k: calls.append(1) or real(*a, **k))
    lrn = c.ChannelLRN(nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0))
    x = torch.randn(1, 8, 4, 4) * 30
    with torch.no_grad():
        lrn(x)
        assert len(calls) == 1
        lrn(x.bfloat16())
        c.ChannelLRN(lrn.lrn, nhwc=True)(x)
    lrn(x.requires_grad_(True))
    assert len(calls) == 1


def test_bf16_backend_keeps_the_head_in_fp32():
    class MatmulHead(nn.Module):  # like EmbeddedDetHead: softmax, then a matmul (bf16 under autocast)
        def __init__(self):
            super().__init__()
            self.register_buffer("m", torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]))

        def forward(self, logits):
            return torch.softmax(logits, dim=1) @ self.m

    m = RegionClassifier(ConstNet([0.1234567, 0.7654321, -0.3141592]), ("a",), ("A",), IDENTITY,
                         head=MatmulHead())
    p = Ensemble([m], channels_last=False, backend="bf16").predict(torch.zeros(1, 3, 4, 4))
    exact = torch.softmax(torch.tensor([[0.1234567, 0.7654321, -0.3141592]]), 1) @ m.head.m
    np.testing.assert_allclose(p, exact.numpy(), rtol=1e-6)  # bf16 would round to ~3 significant digits


def test_batch_size_zero_is_the_backends_own():
    from detector.classifier import batch_size_for
    from detector.config import load_config

    cfg = load_config("configs/detect_bvlc_ilsvrc.yaml").model
    assert cfg.batch_size == 0 and batch_size_for(cfg.backend, cfg.batch_size) == 8  # eager
    assert batch_size_for("onnx") == 16 and batch_size_for("bf16") == 8 and batch_size_for("mnn") == 8
    assert batch_size_for("torch_int8") == batch_size_for("onnx_int8") == 32  # sessions 26 and 27's A/B runs
    assert batch_size_for("onnx_int8", 4) == 4  # an explicit size wins
    with pytest.raises(UserError, match="batch_size must be >= 0"):
        batch_size_for("eager", -1)


def test_bf16_on_a_cpu_without_native_bf16_is_warned_about(tmp_path, monkeypatch, caplog):
    from detector import cpu

    _write_checkpoint(tmp_path / "a.pt")
    cfg = ModelConfig(checkpoints=[str(tmp_path / "a.pt")], batch_size=2, backend="bf16")
    monkeypatch.setattr(cpu, "bf16_supported", lambda: False)
    build_classifier(cfg, WarpConfig())
    assert "no native bf16" in caplog.text
    caplog.clear()
    monkeypatch.setattr(cpu, "bf16_supported", lambda: True)
    build_classifier(cfg, WarpConfig())
    assert "no native bf16" not in caplog.text
