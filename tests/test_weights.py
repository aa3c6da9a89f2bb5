"""Weights lookup, strict loading (wrong shape, missing/extra key, truncated file), preprocessing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from detector.cli import UserError
from detector.googlenet import GoogLeNet
from detector.weights import (BVLC_PREPROCESS, OFFICIAL_SHA256, Preprocess, WeightsError, find_weights,
                              load_bvlc_weights, preprocess, sha256_file)


def _fake_bvlc(seed: int = 0, aux: bool = False) -> dict[str, np.ndarray]:
    """A valid BVLC-layout array dict (random values) built from the network's own Caffe name table."""
    torch.manual_seed(seed)
    net = GoogLeNet(aux_logits=aux)
    state = net.state_dict()
    return {ck: state[k].numpy().copy() for k, ck in net.caffe_state_keys().items()}


@pytest.fixture(scope="module")
def fake_arrays() -> dict[str, np.ndarray]:
    return _fake_bvlc()


def _save(tmp_path, arrays, name="w.npz"):
    p = tmp_path / name
    np.savez(p, **arrays)
    return p


def test_loads_every_tensor_and_returns_sha(tmp_path, fake_arrays, caplog):
    p = _save(tmp_path, fake_arrays)
    assert len(fake_arrays) == 116
    net = GoogLeNet()
    with caplog.at_level("INFO"):
        sha = load_bvlc_weights(net, p)
    assert sha == sha256_file(p) and sha != OFFICIAL_SHA256
    assert "differs from the official" in caplog.text and sha in caplog.text
    np.testing.assert_array_equal(net.inception_4a.b3x3.weight.detach().numpy(),
                                  fake_arrays["inception_4a/3x3/weight"])
    np.testing.assert_array_equal(net.classifier.bias.detach().numpy(), fake_arrays["loss3/classifier/bias"])


def test_wrong_shape_rejected(tmp_path, fake_arrays):
    bad = dict(fake_arrays)
    bad["inception_4a/5x5/weight"] = np.zeros((48, 16, 3, 3), np.float32)  # torchvision's 3x3 branch
    with pytest.raises(WeightsError, match=r"inception_4a/5x5/weight: file \(48, 16, 3, 3\)"):
        load_bvlc_weights(GoogLeNet(), _save(tmp_path, bad))


def test_missing_key_rejected(tmp_path, fake_arrays):
    bad = {k: v for k, v in fake_arrays.items() if k != "conv2/3x3/bias"}
    with pytest.raises(WeightsError, match=r"missing 1 tensors \['conv2/3x3/bias'\]"):
        load_bvlc_weights(GoogLeNet(), _save(tmp_path, bad))


def test_extra_key_rejected(tmp_path, fake_arrays):
    bad = dict(fake_arrays, **{"inception_6a/1x1/weight": np.zeros((1,), np.float32)})
    with pytest.raises(WeightsError, match=r"unexpected 1 tensors \['inception_6a/1x1/weight'\]"):
        load_bvlc_weights(GoogLeNet(), _save(tmp_path, bad))


def test_truncated_and_non_npz_files_rejected(tmp_path, fake_arrays):
    p = _save(tmp_path, fake_arrays)
    data = p.read_bytes()
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="trunc.npz: not a readable .npz"):
        load_bvlc_weights(GoogLeNet(), trunc)
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(WeightsError, match="notes.npz: not a readable .npz"):
        load_bvlc_weights(GoogLeNet(), text)
    with pytest.raises(WeightsError, match="weights file not found"):
        load_bvlc_weights(GoogLeNet(), tmp_path / "absent.npz")


def test_trunk_only_for_a_k_plus_1_head(tmp_path, fake_arrays):
    p = _save(tmp_path, fake_arrays)
    torch.manual_seed(1)
    net = GoogLeNet(num_classes=4, aux_logits=True)
    with pytest.raises(WeightsError, match="strict_classifier=False"):
        load_bvlc_weights(net, p)
    head = net.classifier.weight.detach().clone()
    load_bvlc_weights(net, p, strict_classifier=False)
    torch.testing.assert_close(net.classifier.weight.detach(), head)  # fresh head kept
    np.testing.assert_array_equal(net.conv1.weight.detach().numpy(), fake_arrays["conv1/7x7_s2/weight"])


def test_aux_tensors_of_a_converted_caffemodel(tmp_path):
    """A train-time caffemodel also has loss1/loss2: loaded into aux heads when present, else tolerated."""
    arrays = _fake_bvlc(seed=2, aux=True)
    p = _save(tmp_path, arrays)
    net = GoogLeNet(aux_logits=True)
    load_bvlc_weights(net, p)
    np.testing.assert_array_equal(net.aux1.fc.weight.detach().numpy(), arrays["loss1/fc/weight"])
    load_bvlc_weights(GoogLeNet(aux_logits=False), p)  # no error: aux tensors are not for this network


def test_find_weights_order(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv("GOOGLENET_WEIGHTS", raising=False)
    with pytest.raises(WeightsError, match=r"bvlc_googlenet.caffemodel.*convert_caffemodel.py"):
        find_weights(None)
    cached = cache / "googlenet_rcnn" / "bvlc_googlenet.npz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert find_weights(None) == cached
    env = tmp_path / "env.npz"
    env.write_bytes(b"x")
    monkeypatch.setenv("GOOGLENET_WEIGHTS", str(env))
    assert find_weights(None) == env
    explicit = tmp_path / "explicit.npz"
    explicit.write_bytes(b"x")
    assert find_weights(str(explicit)) == explicit
    with pytest.raises(WeightsError, match="nope.npz"):
        find_weights(str(tmp_path / "nope.npz"))  # an explicit path never falls back silently


def test_preprocess_bvlc_known_values():
    img = np.zeros((2, 4, 5, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 200, 100, 50  # R, G, B
    x = preprocess(img)
    assert x.shape == (2, 3, 4, 5) and x.dtype == torch.float32
    # BGR order minus (104, 117, 123): B 50-104, G 100-117, R 200-123.
    assert x[0, :, 0, 0].tolist() == [-54.0, -17.0, 77.0]
    assert preprocess(img[0]).shape == (1, 3, 4, 5)
    tv = Preprocess("RGB", 1.0, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert preprocess(np.full((1, 1, 1, 3), 255, np.uint8), tv)[0, :, 0, 0].tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="RGB images"):
        preprocess(np.zeros((1, 3, 4, 4), np.uint8))
    assert BVLC_PREPROCESS.channel_order == "BGR" and BVLC_PREPROCESS.mean == (104.0, 117.0, 123.0)


def test_preprocess_matches_warp_normalisation():
    from detector.warp import _normalise

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (1, 6, 7, 3), dtype=np.uint8)
    ref = _normalise(torch.from_numpy(img).permute(0, 3, 1, 2).float(), BVLC_PREPROCESS)
    torch.testing.assert_close(preprocess(img), ref)


def test_real_file_hash(bvlc_weights):
    assert sha256_file(bvlc_weights) == OFFICIAL_SHA256


def test_build_backbone(tmp_path, fake_arrays):
    from detector.weights import TORCHVISION_PREPROCESS, build_backbone

    p = _save(tmp_path, fake_arrays)
    net, pre, source = build_backbone("bvlc", num_classes=5, weights=str(p), aux_logits=True)
    assert pre == BVLC_PREPROCESS and sha256_file(p) in source and net.classifier.out_features == 5
    np.testing.assert_array_equal(net.conv1.weight.detach().numpy(), fake_arrays["conv1/7x7_s2/weight"])
    with pytest.raises(UserError, match="backbone must be one of"):
        build_backbone("resnet", weights=str(p))
    assert TORCHVISION_PREPROCESS.channel_order == "RGB" and TORCHVISION_PREPROCESS.scale == 1.0
