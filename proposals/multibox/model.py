"""The MultiBox proposal network: the GoogLeNet trunk (BVLC ImageNet weights) and heads regressing K box
offsets from K priors plus K objectness logits, from the whole image resized to 224x224.

Heads (our choice; the 2013 paper used the network's last layers directly): inception_5b map ``[1024, 7, 7]``
-> 1x1 conv 256 + ReLU -> FC 1024 + ReLU -> dropout 0.5 -> linear ``K * 4`` offsets and linear ``K`` logits.
Predictions live in normalised image coordinates (``[0, 1]`` xyxy): ``box_i = prior_i + offset_i``
(:func:`decode`, inverse :func:`encode`). A single 224x224 view of the whole image is used (the paper's
optional multi-crop merging is not implemented).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from detector.boxes import clip_boxes, nms, scale_boxes
from detector.googlenet import LAYER_NAMES, GoogLeNet
from detector.weights import BVLC_PREPROCESS, preprocess

__all__ = ["MultiBoxHead", "MultiBoxNet", "encode", "decode", "to_image", "from_image", "image_tensor",
           "INPUT_SIZE"]

INPUT_SIZE = 224


def encode(boxes: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """Normalised boxes ``[..., K, 4]`` -> offsets from ``priors`` ``[K, 4]``. Inverse: :func:`decode`."""
    return boxes - priors


def decode(offsets: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """Offsets ``[..., K, 4]`` -> normalised boxes. Inverse of :func:`encode`."""
    return offsets + priors


def to_image(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Normalised xyxy -> image pixels (library convention). Inverse: :func:`from_image`."""
    return scale_boxes(boxes, width, height)


def from_image(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Image xyxy -> normalised ``[0, 1]``. Inverse of :func:`to_image`."""
    return scale_boxes(boxes, 1.0 / width, 1.0 / height)


def image_tensor(image: np.ndarray, flip: bool = False) -> torch.Tensor:
    """RGB uint8 ``[H, W, 3]`` -> the network input ``[1, 3, 224, 224]`` (whole image, anisotropic resize)."""
    img = cv2.resize(image, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
    if flip:
        img = np.ascontiguousarray(img[:, ::-1])
    return preprocess(torch.from_numpy(img)[None], BVLC_PREPROCESS)


class MultiBoxHead(nn.Module):
    def __init__(self, num_priors: int, in_channels: int = 1024, dropout: float = 0.5) -> None:
        super().__init__()
        self.num_priors = num_priors
        self.reduce = nn.Conv2d(in_channels, 256, 1)
        self.fc = nn.Linear(256 * 7 * 7, 1024)
        self.dropout = dropout
        self.loc = nn.Linear(1024, num_priors * 4)
        self.conf = nn.Linear(1024, num_priors)
        nn.init.zeros_(self.loc.weight)  # start at the priors
        nn.init.zeros_(self.loc.bias)
        nn.init.normal_(self.conf.weight, std=0.01)
        nn.init.constant_(self.conf.bias, -np.log(num_priors / 10.0))  # ~10 positives among K at init

    def forward(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.reduce(fmap))
        x = F.adaptive_avg_pool2d(x, 7)
        x = F.relu(self.fc(torch.flatten(x, 1)))
        x = F.dropout(x, self.dropout, self.training)
        return self.loc(x).view(-1, self.num_priors, 4), self.conf(x)


class MultiBoxNet(nn.Module):
    """Trunk + head. ``forward(x [B,3,224,224]) -> (boxes [B,K,4] normalised xyxy, logits [B,K])``.
    ``forward_from(h, layer)`` continues from a cached trunk output (training on cached features)."""

    def __init__(self, priors: np.ndarray | torch.Tensor) -> None:
        super().__init__()
        priors = torch.as_tensor(np.asarray(priors, np.float32))
        self.trunk = GoogLeNet(num_classes=1000)
        self.head = MultiBoxHead(len(priors))
        self.register_buffer("priors", priors)

    @property
    def num_priors(self) -> int:
        return len(self.priors)

    def _heads(self, fmap: torch.Tensor):
        offsets, logits = self.head(fmap)
        return decode(offsets, self.priors), logits

    def forward(self, x: torch.Tensor):
        return self._heads(self.trunk.forward_until(x, LAYER_NAMES[-1]))

    def forward_from(self, h: torch.Tensor, layer: str):
        return self._heads(self.trunk.forward_from(h, layer))

    @torch.inference_mode()
    def predict(self, image: np.ndarray, top_k: int = 200, nms_threshold: float = 0.7
                ) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (float32 ``[n, 4]`` image xyxy, n <= top_k) and objectness scores ``[n]`` for an RGB image:
        all K predictions clipped to the image, NMS at ``nms_threshold``, best ``top_k`` by score."""
        self.eval()
        h, w = image.shape[:2]
        boxes, logits = self(image_tensor(image))
        b = clip_boxes(to_image(boxes[0].numpy(), w, h), w, h)
        s = torch.sigmoid(logits[0]).numpy()
        ok = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        b, s = b[ok], s[ok]
        keep = nms(b, s, nms_threshold)[:top_k]
        return b[keep], s[keep].astype(np.float32)
