"""Training from cached frozen-trunk features: the same outputs and gradients as running the frozen layers,
pool restriction keeps ground truth and caps proposals, the disk cache is reused / rebuilt honestly, and a
killed cached-feature run resumes to the same weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from detector.config import DetectConfig, ModelConfig
from detector.structures import Dataset
from detector.training.features import (FeatureCache, cache_dir_for, check_feature_layer, forward_from_features,
                                        restrict_pool, restrict_pools)
from detector.training.model import build_train_model
from detector.training.sampling import RegionPool, RegionSampler, label_regions
from detector.training.train import RegionLoader, train
from detector.training.validate import SplitValidator
from detector.weights import BVLC_PREPROCESS

from test_training import CLASSES, WARP, _cfg, data  # noqa: F401  (the synthetic red/blue squares fixture)


def _net(seed=0, **kw):
    torch.manual_seed(seed)
    return build_train_model(2, ModelConfig(), _cfg(**kw), load_weights=False)[0]


def test_restrict_pool_keeps_gt_and_caps_proposals():
    gt = np.array([[0, 0, 10, 10]], np.float32)
    props = np.array([[0, 0, 10, 9]] * 5 + [[50, 50, 60, 60]] * 7, np.float32)  # 5 fg, 7 bg
    pool = label_regions(props, gt, np.array([1]))
    assert pool.gt_mask.tolist() == [True] + [False] * 12
    r = restrict_pool(pool, max_fg=2, max_bg=3, seed=0)
    assert r.gt_mask.sum() == 1 and r.labels[0] == 2  # the ground-truth box, class 1 -> column 2
    assert ((r.labels > 0) & ~r.gt_mask).sum() == 2 and (r.labels == 0).sum() == 3
    assert restrict_pool(pool, 0, 0, seed=0).labels.tolist() == pool.labels.tolist()  # 0 = keep all
    a, b = restrict_pools([pool, pool], 2, 3), restrict_pools([pool, pool], 2, 3)
    np.testing.assert_array_equal(a[1].boxes, b[1].boxes)  # deterministic: shared by ensemble members
    with pytest.raises(ValueError):
        restrict_pool(pool, -1, 0, 0)


def test_cached_features_equal_running_the_frozen_layers(data, tmp_path):
    records, pools = data
    net = _net()
    cache = FeatureCache.build(records, pools, net, "pool4", WARP, BVLC_PREPROCESS, flips=2)
    sampler = RegionSampler(pools, 16, 0.25, hflip=True, seed=5)
    batch = sampler.sample(0)
    assert batch.flip.any() and (~batch.flip).any()
    h, y = cache.load(batch)
    x, y2 = RegionLoader(records, WARP, BVLC_PREPROCESS).load(batch)
    assert torch.equal(y, y2)
    net.train()
    torch.manual_seed(1)
    a = F.cross_entropy(forward_from_features(net, h, "pool4"), y)
    ga = torch.autograd.grad(a, [p for p in net.parameters() if p.requires_grad])
    torch.manual_seed(1)  # the same dropout mask
    b = F.cross_entropy(net(x), y)
    gb = torch.autograd.grad(b, [p for p in net.parameters() if p.requires_grad])
    assert abs(a.item() - b.item()) < 2e-3 * abs(b.item())  # float16 storage only
    for u, v in zip(ga, gb):
        np.testing.assert_allclose(u.numpy(), v.numpy(), rtol=0.02, atol=2e-4 * float(v.abs().max()) + 1e-7)


def test_feature_cache_on_disk_reused_and_rebuilt(data, tmp_path):
    records, pools = data
    net = _net()
    a = FeatureCache.build(records, pools, net, "pool4", WARP, BVLC_PREPROCESS, 2, tmp_path, {"w": "x"})
    files = sorted(tmp_path.glob("*.npy"))
    assert len(files) == len(records)
    stamp = [f.stat().st_mtime_ns for f in files]
    done = []
    b = FeatureCache.build(records, pools, net, "pool4", WARP, BVLC_PREPROCESS, 2, tmp_path, {"w": "x"},
                           progress=done.append)
    assert [f.stat().st_mtime_ns for f in files] == stamp  # read, not recomputed
    assert sum(done) == sum(len(p.labels) * 2 for p in pools)
    for u, v in zip(a.feats, b.feats):
        np.testing.assert_array_equal(u, v)
    FeatureCache.build(records, pools, net, "pool4", WARP, BVLC_PREPROCESS, 2, tmp_path, {"w": "other weights"})
    assert [f.stat().st_mtime_ns for f in sorted(tmp_path.glob("*.npy"))] != stamp  # another key: rebuilt


def test_feature_layer_must_be_frozen(data):
    net = _net(freeze_below="inception_4e")
    with pytest.raises(ValueError, match="trainable"):
        check_feature_layer(net, "pool4")
    with pytest.raises(ValueError, match="unknown layer"):
        check_feature_layer(net, "conv9")
    check_feature_layer(net, "inception_4d")


def test_cached_training_lowers_loss_and_resumes_exactly(data, tmp_path):
    records, pools = data
    net0 = _net(3)
    cache = FeatureCache.build(records, pools, net0, "pool4", WARP, BVLC_PREPROCESS, 2)
    fwd = lambda m, h: forward_from_features(m, h, "pool4")  # noqa: E731

    def run(out, stop_after=None, resume=False, iterations=6):
        cfg = _cfg(iterations=iterations, base_lr=0.003)
        net = _net(cfg.seed)
        sampler = RegionSampler(pools, cfg.batch_size, cfg.fg_fraction, cfg.hflip, cfg.seed)
        meta = {"classes": CLASSES, "class_names": CLASSES, "arch": "x", "config": {}}
        return net, train(net, sampler, cache.load, cfg, out, meta, resume=resume, stop_after=stop_after,
                          forward=fwd)

    probe = RegionSampler(pools, 64, 0.25, hflip=False, seed=99).sample(0)
    h, y = cache.load(probe)

    def loss(net):
        net.eval()
        with torch.no_grad():
            return F.cross_entropy(fwd(net, h), y).item()

    before = loss(_net(3))
    net, full = run(tmp_path / "full")
    assert loss(net) < 0.9 * before
    run(tmp_path / "part", stop_after=4)
    _, resumed = run(tmp_path / "part", resume=True)
    from detector.training.checkpoint import load_checkpoint

    a, b = load_checkpoint(full.last), load_checkpoint(resumed.last)
    assert a["iteration"] == b["iteration"] == 6
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_validator_cached_equals_full_network(data):
    records, pools = data
    ds = Dataset("synthetic", CLASSES, CLASSES, records)
    props = [p.boxes[:12] for p in pools]
    net = _net()
    cfg = DetectConfig()
    full = SplitValidator(ds, props, WARP, BVLC_PREPROCESS, cfg)
    cached = SplitValidator(ds, props, WARP, BVLC_PREPROCESS, cfg, feature_net=net, feature_layer="pool4")
    for u, v in zip(full.probabilities(net), cached.probabilities(net)):
        np.testing.assert_allclose(u, v, atol=2e-3)
    m = full(net)
    assert 0.0 <= m <= 1.0 and abs(m - cached(net)) < 0.05
    gt_props = [r.boxes for r in records]  # proposals = the ground truth: a classifier that says so scores 1
    assert SplitValidator(ds, gt_props, WARP, BVLC_PREPROCESS, cfg)(_Oracle(records, gt_props)) == 1.0


class _Oracle(torch.nn.Module):
    """Classifies the i-th proposal of each image as its ground-truth label (images in order)."""

    def __init__(self, records, props):
        super().__init__()
        self.num_classes = 3
        self.labels = torch.cat([torch.as_tensor(r.labels) + 1 for r in records])
        self.pos = 0

    def forward(self, x):
        lab = self.labels[self.pos:self.pos + len(x)]
        self.pos += len(x)
        return F.one_hot(lab, 3).float() * 20


def test_cache_dirs_differ_by_key_and_images(data):
    records, _ = data
    a = cache_dir_for("c", "voc_pool4", {"w": 1}, records)
    assert a == cache_dir_for("c", "voc_pool4", {"w": 1}, records)  # stable: runs that differ by seed share it
    assert a != cache_dir_for("c", "voc_pool4", {"w": 1}, records[:2])  # another data set (same format name)
    assert a != cache_dir_for("c", "voc_pool4", {"w": 2}, records)  # other weights / pool limits / proposals
