"""GoogLeNet: Table 1 shapes, parameter count, aux heads, freezing, and the real BVLC classifier's answers."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from detector.googlenet import CAFFE_NAMES, LAYER_NAMES, GoogLeNet, GoogLeNetOutputs, torchvision_googlenet

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def net() -> GoogLeNet:
    torch.manual_seed(0)
    return GoogLeNet().eval()


def test_parameter_count_matches_bvlc_file(net):
    # The BVLC .npz holds 6,998,552 values (README), all of them parameters of this network.
    assert sum(p.numel() for p in net.parameters()) == 6_998_552


def test_table1_feature_map_shapes(net):
    # Table 1 output sizes at 224x224 input (ceil-mode pooling as Caffe).
    expected = {"conv1": (64, 112, 112), "pool1": (64, 56, 56), "conv2": (192, 56, 56), "pool2": (192, 28, 28),
                "inception_3a": (256, 28, 28), "inception_3b": (480, 28, 28), "pool3": (480, 14, 14),
                "inception_4a": (512, 14, 14), "inception_4d": (528, 14, 14), "inception_4e": (832, 14, 14),
                "pool4": (832, 7, 7), "inception_5a": (832, 7, 7), "inception_5b": (1024, 7, 7)}
    x = torch.zeros(1, 3, 224, 224)
    with torch.no_grad():
        for name, shape in expected.items():
            assert tuple(net.forward_until(x, name).shape[1:]) == shape, name
        assert net.forward_features(x).shape == (1, 1024)
        assert net(x).shape == (1, 1000)


def test_forward_from_continues_forward_until(net):
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        full = net.forward_until(x, "inception_5b")
        split = net.forward_from(net.forward_until(x, "inception_4c"), "inception_4c")
    torch.testing.assert_close(split, full)


def test_fifth_branch_is_5x5_and_lrn_present(net):
    assert net.inception_3a.b5x5.kernel_size == (5, 5) and net.inception_3a.b5x5.padding == (2, 2)
    assert isinstance(net.norm1, torch.nn.LocalResponseNorm) and net.norm1.size == 5
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())


def test_caffe_name_table_covers_every_parameter():
    net = GoogLeNet(num_classes=3, aux_logits=True)
    keys = net.caffe_state_keys()
    assert keys["inception_4a.b3x3.weight"] == "inception_4a/3x3/weight"
    assert keys["conv1.bias"] == "conv1/7x7_s2/bias"
    assert keys["aux2.fc.weight"] == "loss2/fc/weight"
    assert len(set(keys.values())) == len(keys)  # 1:1
    assert set(CAFFE_NAMES) == {k.rpartition(".")[0] for k in keys}


def test_aux_heads_only_in_training_mode():
    torch.manual_seed(0)
    net = GoogLeNet(num_classes=5, aux_logits=True)
    x = torch.randn(2, 3, 224, 224)
    net.train()
    out = net(x)
    assert isinstance(out, GoogLeNetOutputs)
    assert out.logits.shape == out.aux1.shape == out.aux2.shape == (2, 5)
    assert net.aux1.fc.in_features == 2048 and net.aux2.conv.in_channels == 528
    net.eval()
    with torch.no_grad():
        assert net(x).shape == (2, 5)
    assert GoogLeNet(aux_logits=False).aux1 is None


def test_freeze_below():
    net = GoogLeNet(num_classes=4)
    frozen = net.freeze_below("inception_4e")
    assert frozen[0] == "conv1" and frozen[-1] == "inception_4d"
    assert not any(p.requires_grad for p in net.inception_4d.parameters())
    assert all(p.requires_grad for p in net.inception_4e.parameters())
    assert all(p.requires_grad for p in net.classifier.parameters())
    assert net.freeze_below("none") == [] and all(p.requires_grad for p in net.parameters())
    with pytest.raises(ValueError, match="inception_4e"):
        net.freeze_below("inception_9z")
    assert net.layer_names == LAYER_NAMES


def test_torchvision_backbone_shapes_without_download():
    tv = torchvision_googlenet(num_classes=7, pretrained=False).eval()
    with torch.no_grad():
        assert tv(torch.zeros(1, 3, 224, 224)).shape == (1, 7)


def _top(net: GoogLeNet, image: np.ndarray, words: list[str]) -> tuple[str, float]:
    from detector.weights import preprocess

    x = preprocess(cv2.resize(image, (224, 224), interpolation=cv2.INTER_LINEAR))
    with torch.no_grad():
        p = torch.softmax(net(x), dim=1)[0]
    i = int(p.argmax())
    return words[i], float(p[i])


def test_bvlc_classifier_known_answers(bvlc_weights):
    """The README's check: chelsea -> Egyptian cat (~0.51), coffee -> espresso (~0.97)."""
    import skimage.data

    from detector.weights import load_bvlc_weights

    net = GoogLeNet().eval()
    load_bvlc_weights(net, bvlc_weights)
    words = [line.split(" ", 1)[1].strip() for line in
             (bvlc_weights.parent / "synset_words.txt").read_text().splitlines()]
    name, p = _top(net, skimage.data.chelsea(), words)
    assert name == "Egyptian cat" and p == pytest.approx(0.51, abs=0.03)
    name, p = _top(net, skimage.data.coffee(), words)
    assert name == "espresso" and p == pytest.approx(0.97, abs=0.02)
