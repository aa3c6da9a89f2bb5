"""MultiBox: prior clustering, assignment vs brute force, loss, decode round trip, merge, a training step."""
import itertools

import numpy as np
import pytest
import torch

from proposals.merge import merge_proposals
from proposals.multibox.loss import assignment_cost, match, multibox_loss
from proposals.multibox.model import MultiBoxHead, decode, encode, from_image, to_image
from proposals.multibox.priors import kmeans_priors


def test_kmeans_recovers_known_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.9, 0.9], [0.0, 0.6, 0.2, 1.0]], np.float32)
    boxes = np.concatenate([c + rng.normal(0, 0.005, (50, 4)) for c in centres]).astype(np.float32)
    pri = kmeans_priors(boxes, 3, seed=0)
    for c in centres:  # every true centre has a prior within 0.01
        assert np.abs(pri - c).max(axis=1).min() < 0.01
    np.testing.assert_array_equal(pri, kmeans_priors(boxes, 3, seed=0))  # deterministic


def test_fewer_boxes_than_priors_padded():
    pri = kmeans_priors(np.array([[0.1, 0.1, 0.5, 0.5]], np.float32), 10)
    assert pri.shape == (10, 4)


def test_assignment_matches_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(20):
        k, g = int(rng.integers(2, 6)), int(rng.integers(1, 4))
        g = min(g, k)
        loc = rng.random((k, 4))
        logits = rng.normal(size=k)
        gt = rng.random((g, 4))
        cost = assignment_cost(loc, logits, gt, alpha=0.3)
        best = min(sum(cost[p[j], j] for j in range(g)) for p in itertools.permutations(range(k), g))
        m = match(loc, logits, gt, alpha=0.3)
        assert len(set(m)) == g
        assert sum(cost[m[j], j] for j in range(g)) == pytest.approx(best)


def test_loss_hand_computed_and_empty_image():
    loc = torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]])
    logits = torch.tensor([[0.0, 0.0]])
    gt = [torch.tensor([[0.5, 0.5, 1.0, 0.9]])]
    loss, parts = multibox_loss(loc, logits, gt, alpha=2.0)
    # gt matches prediction 1 (distance 0.01 vs 1.01): loc = 2/2 * 0.01; conf = 2 * log 2
    assert parts["matched"] == 1
    assert float(loss) == pytest.approx(0.01 + 2 * np.log(2), rel=1e-5)
    loss0, parts0 = multibox_loss(loc, logits, [torch.zeros((0, 4))], alpha=2.0)
    assert parts0["matched"] == 0 and float(loss0) == pytest.approx(2 * np.log(2), rel=1e-5)


def test_decode_round_trip():
    pri = torch.rand(5, 4)
    boxes = torch.rand(2, 5, 4)
    torch.testing.assert_close(decode(encode(boxes, pri), pri), boxes)
    img = np.array([[10, 20, 200, 150]], np.float32)
    np.testing.assert_allclose(to_image(from_image(img, 320, 240), 320, 240), img, rtol=1e-6)


def test_merge_is_deterministic_and_dedups():
    ss = np.array([[0, 0, 10, 10], [5, 5, 20, 20]], np.float32)
    mb = np.array([[5, 5, 20, 20], [1, 1, 2, 2]], np.float32)
    m = merge_proposals(ss, mb)
    assert m.tolist() == [[5, 5, 20, 20], [1, 1, 2, 2], [0, 0, 10, 10]]
    np.testing.assert_array_equal(m, merge_proposals(ss, mb))
    assert merge_proposals(np.zeros((0, 4)), np.zeros((0, 4))).shape == (0, 4)


def test_training_steps_lower_loss_including_image_without_gt():
    torch.manual_seed(0)
    pri = torch.tensor(kmeans_priors(np.random.default_rng(0).random((40, 4)).astype(np.float32) * 0.5
                                     + np.array([0, 0, 0.5, 0.5], np.float32), 8))
    head = MultiBoxHead(8, in_channels=16)
    fmap = torch.randn(3, 16, 7, 7)
    gts = [torch.tensor([[0.1, 0.1, 0.6, 0.6]]), torch.zeros((0, 4)), torch.tensor([[0.3, 0.2, 0.9, 0.8]])]
    opt = torch.optim.SGD(head.parameters(), lr=0.01, momentum=0.9)
    head.eval()  # no dropout: a deterministic objective
    losses = []
    for _ in range(15):
        off, logits = head(fmap)
        loss, _ = multibox_loss(decode(off, pri), logits, gts, alpha=0.3)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.8


def test_checkpoint_round_trip_and_propose_dispatch(tmp_path):
    """A saved MultiBox model loads strictly and serves proposals.method multibox / ss+multibox."""
    from detector.config import MultiBoxConfig, MultiBoxTrainConfig, ProposalConfig, SelectiveSearchConfig
    from proposals.cache import propose
    from proposals.multibox.model import MultiBoxNet
    from proposals.multibox.train import History, _write, load_model

    torch.manual_seed(0)
    net = MultiBoxNet(kmeans_priors(np.random.default_rng(0).random((30, 4)).astype(np.float32) * 0.4
                                    + np.array([0, 0, 0.5, 0.5], np.float32), 6))
    opt = torch.optim.SGD(net.head.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 10)
    path = tmp_path / "last.pt"
    _write(path, net, opt, sched, 0, MultiBoxTrainConfig(), "sha", History())
    loaded = load_model(path)
    for a, b in zip(net.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    img = (np.random.default_rng(2).random((90, 120, 3)) * 255).astype(np.uint8)
    cfg = ProposalConfig(method="multibox", multibox=MultiBoxConfig(checkpoint=str(path), top_k=4),
                         selective_search=SelectiveSearchConfig(resize_width=120))
    mb = propose(img, cfg)
    assert 0 < len(mb) <= 4 and (mb[:, 2] <= 120).all() and (mb[:, 3] <= 90).all()
    cfg.method = "ss+multibox"
    both = propose(img, cfg)
    np.testing.assert_array_equal(both[:len(mb)], mb)  # MultiBox boxes first, then Selective Search
    assert len(both) > len(mb)
