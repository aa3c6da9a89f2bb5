"""Fine-tuning loop on a tiny synthetic dataset: the loss falls, kill + resume equals an uninterrupted
run, mismatched checkpoints are refused, the saved model loads as a detector classifier."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from detector.config import ModelConfig, TrainConfig, WarpConfig
from detector.structures import ImageRecord
from detector.training.checkpoint import CheckpointError, load_checkpoint
from detector.training.model import build_train_model
from detector.training.sampling import RegionSampler, label_regions
from detector.training.train import RegionLoader, photometric_distort, train
from detector.weights import BVLC_PREPROCESS

cv2 = pytest.importorskip("cv2")

WARP = WarpConfig(size=32, context_pad=2)
CLASSES = ("red", "blue")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """4 images 96x96: a red square (class 0) and a blue square (class 1) on grey noise."""
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    records, pools = [], []
    for i in range(4):
        img = rng.integers(100, 140, (96, 96, 3)).astype(np.uint8)
        r = np.array([8 + 4 * i, 10, 40 + 4 * i, 42], np.float32)
        b = np.array([50, 52 - 4 * i, 86, 88 - 4 * i], np.float32)
        img[int(r[1]):int(r[3]), int(r[0]):int(r[2])] = (220, 30, 30)
        img[int(b[1]):int(b[3]), int(b[0]):int(b[2])] = (30, 30, 220)
        path = d / f"im{i}.png"
        cv2.imwrite(str(path), img[..., ::-1])
        rec = ImageRecord(f"im{i}", path, 96, 96, np.stack([r, b]), np.array([0, 1]))
        xy = rng.uniform(0, 70, (30, 2)).astype(np.float32)
        props = np.concatenate([xy, xy + rng.uniform(8, 26, (30, 2)).astype(np.float32)], 1)
        records.append(rec)
        pools.append(label_regions(props, rec.boxes, rec.labels))
    return records, pools


def _cfg(**kw):
    base = dict(iterations=6, batch_size=16, base_lr=0.01, head_lr_mult=1.0, lr_step=4, ema_decay=0.9,
                freeze_below="inception_5a", checkpoint_every=2, eval_every=0, seed=3, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def _run(data, out, cfg, resume=False, stop_after=None, classes=CLASSES):
    records, pools = data
    torch.manual_seed(cfg.seed)
    net, _, arch = build_train_model(len(classes), ModelConfig(), cfg, load_weights=False)
    sampler = RegionSampler(pools, cfg.batch_size, cfg.fg_fraction, cfg.hflip, cfg.seed)
    loader = RegionLoader(records, WARP, BVLC_PREPROCESS, photometric=cfg.photometric)
    meta = {"classes": classes, "class_names": classes, "arch": arch, "config": {"warp": vars(WARP)}}
    return net, train(net, sampler, loader.load, cfg, out, meta, resume=resume, stop_after=stop_after), loader


def _mean_loss(net, data, loader):
    records, pools = data
    sampler = RegionSampler(pools, 64, 0.25, hflip=False, seed=99)
    x, y = loader.load(sampler.sample(0))
    net.eval()
    with torch.no_grad():
        return F.cross_entropy(net(x), y).item()


def test_training_lowers_loss(data, tmp_path):
    records, pools = data
    cfg = _cfg(iterations=5, ema_decay=0.0, base_lr=0.003)
    torch.manual_seed(cfg.seed)
    net0, _, _ = build_train_model(2, ModelConfig(), cfg, load_weights=False)
    loader = RegionLoader(records, WARP, BVLC_PREPROCESS)
    before = _mean_loss(net0, data, loader)
    net, res, _ = _run(data, tmp_path, cfg)
    after = _mean_loss(net, data, loader)
    assert res.iteration == 5 and len(res.loss_history) == 5
    assert after < 0.9 * before, (before, after)
    assert res.regions_per_s > 0 and res.peak_mb > 0


def test_kill_and_resume_equals_uninterrupted(data, tmp_path):
    cfg = _cfg(photometric=True)
    _, full, _ = _run(data, tmp_path / "full", cfg)
    _, part, _ = _run(data, tmp_path / "part", cfg, stop_after=3)  # "killed" after step 3 (checkpointed)
    assert part.iteration == 3
    _, resumed, _ = _run(data, tmp_path / "part", cfg, resume=True)
    assert resumed.iteration == 6
    a, b = load_checkpoint(full.last), load_checkpoint(resumed.last)
    for key in ("model", "raw_model"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    assert a["history"]["loss"] == b["history"]["loss"]
    assert not all(torch.equal(a["model"][k], a["raw_model"][k]) for k in a["model"])  # EMA differs from raw


def test_resume_refuses_mismatched_checkpoint(data, tmp_path):
    cfg = _cfg(iterations=2)
    _run(data, tmp_path, cfg)
    with pytest.raises(CheckpointError, match="classes"):
        _run(data, tmp_path, _cfg(iterations=4), resume=True, classes=("blue", "red"))
    with pytest.raises(CheckpointError, match="architecture"):
        _run(data, tmp_path, _cfg(iterations=4, freeze_below="none"), resume=True)  # aux heads on


def test_checkpoint_loads_as_detector_classifier(data, tmp_path):
    from detector.classifier import load_checkpoint_member

    _, res, _ = _run(data, tmp_path, _cfg(iterations=2))
    member = load_checkpoint_member(res.last)
    assert member.classes == CLASSES
    x = torch.zeros(2, 3, 32, 32)
    p = member.eval()(x)
    assert p.shape == (2, 3)
    np.testing.assert_allclose(p.detach().sum(1).numpy(), 1.0, rtol=1e-5)


def test_photometric_identity_and_range():
    img = np.arange(48, dtype=np.uint8).reshape(4, 4, 3) * 5
    np.testing.assert_array_equal(photometric_distort(img, np.full(3, 0.5)), img)  # factors 1, 1, 1
    out = photometric_distort(img, np.array([0.99, 0.0, 0.99]))
    assert out.dtype == np.uint8 and out.shape == img.shape and not np.array_equal(out, img)


def test_shared_trunk_classification_is_exact(data):
    from detector.training.split_eval import classify_split, shared_prefix

    records, pools = data
    torch.manual_seed(0)
    a, _, _ = build_train_model(2, ModelConfig(), _cfg(), load_weights=False)
    b, _, _ = build_train_model(2, ModelConfig(), _cfg(), load_weights=False)
    b.load_state_dict({k: (v + 0.01 if k.startswith("inception_5a.") else v) for k, v in a.state_dict().items()})
    b.reset_classifier(3)
    assert shared_prefix([a, b]) == "pool4"
    props = [p.boxes[:5] for p in pools[:2]]
    probs = classify_split(records[:2], props, [a, b], BVLC_PREPROCESS, WARP, batch_size=4)
    loader = RegionLoader(records, WARP, BVLC_PREPROCESS)
    for m, net in enumerate((a, b)):
        net.eval()
        for i in range(2):
            x = torch.cat([loader.load(_one(i, props[i]))[0]])
            with torch.no_grad():
                ref = torch.softmax(net(x), 1).numpy()
            np.testing.assert_allclose(probs[m][i], ref, rtol=1e-4, atol=1e-6)


def _one(i, boxes):
    from detector.training.sampling import Minibatch

    n = len(boxes)
    return Minibatch(np.full(n, i), boxes, np.zeros(n, np.int64), np.zeros(n, bool), np.zeros((1, 3), np.float32))
