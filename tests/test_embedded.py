"""The embedded ImageNet -> ILSVRC DET head: known mapping answers on the real devkit + synset files,
and hand-computed probabilities on a tiny synthetic hierarchy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from detector.embedded import EmbeddedDetHead, imagenet_to_det_matrix, read_synset_words
from detector.structures import DatasetError


def test_hand_computed_probabilities():
    # 4 ImageNet classes, 2 DET classes: class 0 -> DET 1, classes 1 and 2 -> DET 2, class 3 -> none.
    m = np.array([[1, 0], [0, 1], [0, 1], [0, 0]], np.float32)
    head = EmbeddedDetHead.from_matrix(m)
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]]))
    out = head(logits)
    torch.testing.assert_close(out, torch.tensor([[0.4, 0.1, 0.5], [0.1, 0.7, 0.2]]))
    assert head.firing_classes == 2
    with pytest.raises(ValueError, match="0/1 matrix"):
        EmbeddedDetHead.from_matrix(np.full((2, 2), 0.5))


def test_synset_words_errors(tmp_path):
    with pytest.raises(DatasetError, match="synset_words.txt not found"):
        read_synset_words(tmp_path / "synset_words.txt")
    bad = tmp_path / "words.txt"
    bad.write_text("n01440764 tench\n")
    with pytest.raises(DatasetError, match="expected 1000 lines"):
        read_synset_words(bad)


@pytest.fixture(scope="module")
def real_paths(shared_data, bvlc_weights):
    return shared_data / "ilsvrc2014_devkit" / "data" / "meta_det.mat", bvlc_weights.parent / "synset_words.txt"


def test_real_mapping(real_paths):
    from detector.datasets.ilsvrc_meta import detection_classes, read_meta_det

    meta_path, words_path = real_paths
    m = imagenet_to_det_matrix(meta_path, words_path)
    assert m.shape == (1000, 200)
    assert int((m.sum(0) > 0).sum()) == 190  # 10 DET classes have no ImageNet-1000 descendant
    assert m.sum(1).max() == 1  # no ImageNet class in two DET classes
    det = [s.name for s in detection_classes(read_meta_det(meta_path))]
    wnids = read_synset_words(words_path)
    dog, person = det.index("dog"), det.index("person")
    assert m[wnids.index("n02110341"), dog] == 1  # dalmatian -> dog
    assert m[wnids.index("n02123045"), det.index("domestic cat")] == 1  # tabby -> domestic cat
    assert m[:, person].sum() == 0  # 'person' never fires from the ImageNet classifier
    # meta_det.mat holds only part of WordNet: 7 breeds are linked to 'dog'; Chihuahua is not.
    assert m[:, dog].sum() == 7 and m[wnids.index("n02085620")].sum() == 0
    assert int(m.sum()) == 252


def test_real_head_probabilities(real_paths):
    head = EmbeddedDetHead(*real_paths)
    torch.manual_seed(0)
    out = head(torch.randn(8, 1000) * 5)
    assert out.shape == (8, 201) and bool((out >= 0).all())
    torch.testing.assert_close(out.sum(1), torch.ones(8))  # background + 200 classes = 1 here
    assert head.firing_classes == 190
