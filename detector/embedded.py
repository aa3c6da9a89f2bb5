"""The embedded default detector head: the ImageNet classifier scoring the 200 ILSVRC DET classes.

With no trained detector checkpoint, each region's 1000-way ImageNet softmax is mapped to the 200 detection
classes through the WordNet hierarchy of the devkit's ``meta_det.mat``: a DET class takes the summed
probability of its descendants (itself included) among the 1000 ILSVRC 2012 classes. 190 of the 200 classes
have such descendants; the other 10 never fire.

Background (column 0) is the probability mass of the 1000 classes that belong to no DET class:
``p_bg = 1 - p(union of mapped classes)``. (Our choice; the paper trained real K+1-way classifiers. It makes
the output a drop-in for a trained softmax: the same NMS and thresholds apply.) DET classes could overlap in
the hierarchy, so in general columns 1..200 need not sum to ``1 - p_bg``; with the real meta_det.mat no
ImageNet class descends from two DET classes (252 of the 1000 map to exactly one), so the 201 columns are
a proper distribution summing to 1.

Caveat: the ImageNet classifier was trained on centred whole-object images, not on background regions, so
``p_bg`` is only "probability of a non-DET ImageNet class"; it is a weak background model compared with a
fine-tuned K+1 classifier (the paper's approach).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .datasets.ilsvrc_meta import descendants, detection_classes, read_meta_det
from .structures import DatasetError

__all__ = ["read_synset_words", "imagenet_to_det_matrix", "EmbeddedDetHead"]

log = logging.getLogger(__name__)


def read_synset_words(path: str | Path) -> list[str]:
    """WNIDs of the 1000 classification classes in output order (``synset_words.txt``: ``wnid name``)."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{p}: synset_words.txt not found (expected next to the weights file)")
    wnids = [line.split()[0] for line in p.read_text().splitlines() if line.strip()]
    if len(wnids) != 1000 or not all(w.startswith("n") for w in wnids):
        raise DatasetError(f"{p}: expected 1000 lines 'nXXXXXXXX name', got {len(wnids)}")
    return wnids


def imagenet_to_det_matrix(meta_det_path: str | Path, synset_words_path: str | Path) -> np.ndarray:
    """0/1 float32 ``[1000, 200]``: entry (i, c) = 1 when ImageNet class i descends from DET class c+1."""
    meta = read_meta_det(meta_det_path)
    wnids = read_synset_words(synset_words_path)
    index = {w: i for i, w in enumerate(wnids)}
    m = np.zeros((1000, 200), np.float32)
    for c, syn in enumerate(detection_classes(meta)):
        for w in descendants(meta, syn.det_id):
            if w in index:
                m[index[w], c] = 1.0
    return m


class EmbeddedDetHead(nn.Module):
    """1000 ImageNet logits ``[N, 1000]`` -> probabilities ``[N, 201]``: column 0 background, columns 1..200
    the DET classes in DET_ID order (1 accordion ... 200 zebra)."""

    def __init__(self, meta_det_path: str | Path | None, synset_words_path: str | Path | None,
                 matrix: np.ndarray | None = None) -> None:
        super().__init__()
        if matrix is None:
            matrix = imagenet_to_det_matrix(meta_det_path, synset_words_path)
            log.info("ImageNet->DET head: %d of %d DET classes have ImageNet descendants (%d ImageNet classes "
                     "mapped)", int((matrix.sum(0) > 0).sum()), matrix.shape[1], int((matrix.sum(1) > 0).sum()))
        m = torch.as_tensor(np.asarray(matrix, np.float32))
        if m.ndim != 2 or not bool(((m == 0) | (m == 1)).all()):
            raise ValueError(f"mapping must be a 0/1 matrix [num_imagenet, num_det], got shape {tuple(m.shape)}")
        self.register_buffer("mapping", m)
        self.register_buffer("any_det", (m.sum(1) > 0).float())

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> "EmbeddedDetHead":
        """A head from an explicit 0/1 ``[num_imagenet, num_det]`` matrix (tests, custom hierarchies)."""
        return cls(None, None, matrix=matrix)

    @property
    def firing_classes(self) -> int:
        """Number of DET classes with at least one ImageNet descendant (190 for the real files)."""
        return int((self.mapping.sum(0) > 0).sum())

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """``[N, 1000]`` logits -> ``[N, 201]`` float32 probabilities (column 0 = background)."""
        p = torch.softmax(logits.float(), dim=1)
        det = p @ self.mapping
        bg = (1.0 - p @ self.any_det).clamp_min(0.0)
        return torch.cat([bg[:, None], det], dim=1)
