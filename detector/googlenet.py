"""The paper's GoogLeNet (Szegedy et al. 2014, Table 1) as released by BVLC/Caffe.

Layout (input ``[N, 3, 224, 224]``, BGR 0..255 minus mean, see :mod:`detector.weights`):

    conv1 7x7/2 pad 3 -> max pool 3x3/2 (ceil) -> LRN -> conv2_reduce 1x1 -> conv2 3x3 pad 1 -> LRN
    -> max pool 3x3/2 (ceil) -> 3a, 3b -> max pool -> 4a..4e -> max pool -> 5a, 5b -> avg pool
    -> dropout 0.4 -> linear 1024 -> num_classes

Every convolution has a bias and is followed by ReLU; there is no batch normalisation. The two LRN layers
(size 5, alpha 1e-4, beta 0.75, k 1) are BVLC's, not in Table 1, but the released weights need them.
Inception branches (concatenated in this order): 1x1; 1x1 reduce -> 3x3 pad 1; 1x1 reduce -> **5x5 pad 2**;
max pool 3x3/1 pad 1 -> 1x1 projection. (torchvision's ``googlenet`` uses 3x3 in the third branch and
BatchNorm: a different network, see :func:`torchvision_googlenet`.)

The final pooling is a global average pool: identical to the paper's 7x7/1 average pool at 224x224
input, and it keeps :meth:`GoogLeNet.forward_features` usable at other input sizes.

Auxiliary classifiers on 4a and 4d (paper section 5: avg pool 5x5/3 -> 1x1 conv 128 + ReLU -> FC 1024 +
ReLU -> dropout 0.7 -> linear) exist only with ``aux_logits=True`` and are returned only in training mode.

Module names map 1:1 to the Caffe layer names of the BVLC weights through :data:`CAFFE_NAMES` (e.g.
``inception_4a.b3x3`` <-> ``inception_4a/3x3``); the weights themselves are loaded by
:func:`detector.weights.load_bvlc_weights`.
"""
from __future__ import annotations

import logging
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GoogLeNet", "GoogLeNetOutputs", "Inception", "InceptionAux", "ConvReLU", "CAFFE_NAMES",
           "LAYER_NAMES", "INCEPTION_SPECS", "torchvision_googlenet"]

log = logging.getLogger(__name__)

# name -> (in, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj): Table 1.
INCEPTION_SPECS: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "inception_3a": (192, 64, 96, 128, 16, 32, 32),
    "inception_3b": (256, 128, 128, 192, 32, 96, 64),
    "inception_4a": (480, 192, 96, 208, 16, 48, 64),
    "inception_4b": (512, 160, 112, 224, 24, 64, 64),
    "inception_4c": (512, 128, 128, 256, 24, 64, 64),
    "inception_4d": (512, 112, 144, 288, 32, 64, 64),
    "inception_4e": (528, 256, 160, 320, 32, 128, 128),
    "inception_5a": (832, 256, 160, 320, 32, 128, 128),
    "inception_5b": (832, 384, 192, 384, 48, 128, 128),
}

# Trunk layers in execution order (the names accepted by freeze_below / forward_until).
LAYER_NAMES: tuple[str, ...] = (
    "conv1", "pool1", "norm1", "conv2_reduce", "conv2", "norm2", "pool2",
    "inception_3a", "inception_3b", "pool3",
    "inception_4a", "inception_4b", "inception_4c", "inception_4d", "inception_4e", "pool4",
    "inception_5a", "inception_5b",
)

_BRANCHES = {"b1x1": "1x1", "b3x3_reduce": "3x3_reduce", "b3x3": "3x3", "b5x5_reduce": "5x5_reduce",
             "b5x5": "5x5", "pool_proj": "pool_proj"}


def _caffe_names() -> dict[str, str]:
    names = {"conv1": "conv1/7x7_s2", "conv2_reduce": "conv2/3x3_reduce", "conv2": "conv2/3x3"}
    for block in INCEPTION_SPECS:
        for attr, caffe in _BRANCHES.items():
            names[f"{block}.{attr}"] = f"{block}/{caffe}"
    names["classifier"] = "loss3/classifier"
    for aux, loss in (("aux1", "loss1"), ("aux2", "loss2")):
        for attr in ("conv", "fc", "classifier"):
            names[f"{aux}.{attr}"] = f"{loss}/{attr}"
    return names


#: PyTorch module path -> Caffe layer name (tensor keys are ``<caffe name>/weight`` and ``/bias``).
CAFFE_NAMES: dict[str, str] = _caffe_names()


class GoogLeNetOutputs(NamedTuple):
    """Training-mode output with auxiliary heads: three logit tensors ``[N, num_classes]``."""

    logits: torch.Tensor
    aux1: torch.Tensor
    aux2: torch.Tensor


class ConvReLU(nn.Conv2d):
    """A Caffe convolution (with bias) followed by an in-place ReLU; parameters ``weight`` ``bias``.

    ``fast``: None, or the fp32 inference path :func:`detector.fast_eager.fast_eager` gives it (a fused
    oneDNN convolution + ReLU, or Winograd for 3x3), used only where
    :func:`detector.fast_eager.inference_applies` holds for the input."""

    fast = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast is not None and not self.training:
            from .fast_eager import inference_applies

            if inference_applies(x):
                y = self.fast(self, x)
                if y is not None:
                    return y
        return F.relu(super().forward(x), inplace=True)


class Inception(nn.Module):
    """Inception module: 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | maxpool 3x3/1 -> 1x1, concatenated on channels."""

    def __init__(self, in_ch: int, n1x1: int, n3x3red: int, n3x3: int, n5x5red: int, n5x5: int,
                 pool_proj: int) -> None:
        super().__init__()
        self.b1x1 = ConvReLU(in_ch, n1x1, 1)
        self.b3x3_reduce = ConvReLU(in_ch, n3x3red, 1)
        self.b3x3 = ConvReLU(n3x3red, n3x3, 3, padding=1)
        self.b5x5_reduce = ConvReLU(in_ch, n5x5red, 1)
        self.b5x5 = ConvReLU(n5x5red, n5x5, 5, padding=2)
        self.pool = nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True)
        self.pool_proj = ConvReLU(in_ch, pool_proj, 1)
        self.out_channels = n1x1 + n3x3 + n5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1x1(x), self.b3x3(self.b3x3_reduce(x)), self.b5x5(self.b5x5_reduce(x)),
                          self.pool_proj(self.pool(x))], dim=1)


class InceptionAux(nn.Module):
    """Auxiliary classifier (paper section 5): avg pool 5x5/3 -> 1x1 conv 128 + ReLU -> FC 1024 + ReLU
    -> dropout 0.7 -> linear. Input ``[N, in_ch, 14, 14]`` (224 input) -> logits ``[N, num_classes]``."""

    def __init__(self, in_ch: int, num_classes: int, dropout: float = 0.7) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(5, stride=3, ceil_mode=True)
        self.conv = ConvReLU(in_ch, 128, 1)
        self.fc = nn.Linear(128 * 4 * 4, 1024)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.pool(x))
        if x.shape[-2:] != (4, 4):
            # The FC layer was sized for 14x14 inputs (224x224 images), as in the paper.
            x = F.adaptive_avg_pool2d(x, 4)
        x = F.relu(self.fc(torch.flatten(x, 1)), inplace=True)
        return self.classifier(self.dropout(x))


class GoogLeNet(nn.Module):
    """GoogLeNet of the paper's Table 1 with BVLC's LRN layers.

    ``forward(x)``: ``x`` float ``[N, 3, H, W]`` (224x224 for the BVLC classifier; BGR, 0..255 minus
    mean) -> logits ``[N, num_classes]``; in training mode with ``aux_logits`` a :class:`GoogLeNetOutputs`
    ``(logits, aux1, aux2)``.
    """

    def __init__(self, num_classes: int = 1000, aux_logits: bool = False, dropout: float = 0.4) -> None:
        super().__init__()
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.aux_logits = aux_logits
        self.conv1 = ConvReLU(3, 64, 7, stride=2, padding=3)
        self.pool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.norm1 = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
        self.conv2_reduce = ConvReLU(64, 64, 1)
        self.conv2 = ConvReLU(64, 192, 3, padding=1)
        self.norm2 = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
        self.pool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        for name in ("inception_3a", "inception_3b"):
            setattr(self, name, Inception(*INCEPTION_SPECS[name]))
        self.pool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        for name in ("inception_4a", "inception_4b", "inception_4c", "inception_4d", "inception_4e"):
            setattr(self, name, Inception(*INCEPTION_SPECS[name]))
        self.pool4 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        for name in ("inception_5a", "inception_5b"):
            setattr(self, name, Inception(*INCEPTION_SPECS[name]))
        self.aux1 = InceptionAux(512, num_classes) if aux_logits else None
        self.aux2 = InceptionAux(528, num_classes) if aux_logits else None
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(1024, num_classes)
        self._init_weights()

    # -- initialisation ---------------------------------------------------------------------------
    def _init_weights(self) -> None:
        """Fresh weights (Caffe's xavier for convs, gaussian 0.01 for linears, zero biases)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the main (and auxiliary) classifiers by fresh ``num_classes``-way linears."""
        self.num_classes = num_classes
        self.classifier = nn.Linear(1024, num_classes)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)
        for aux in (self.aux1, self.aux2):
            if aux is not None:
                aux.classifier = nn.Linear(1024, num_classes)
                nn.init.normal_(aux.classifier.weight, std=0.01)
                nn.init.zeros_(aux.classifier.bias)

    # -- trunk access -----------------------------------------------------------------------------
    @property
    def layer_names(self) -> tuple[str, ...]:
        """Trunk layers in execution order (see :data:`LAYER_NAMES`)."""
        return LAYER_NAMES

    def _check_layer(self, name: str) -> int:
        if name not in LAYER_NAMES:
            raise ValueError(f"unknown GoogLeNet layer {name!r}; expected one of {', '.join(LAYER_NAMES)}")
        return LAYER_NAMES.index(name)

    def forward_until(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """Run the trunk up to and including layer ``name``; returns its feature map ``[N, C, h, w]``
        (e.g. ``inception_4e`` -> ``[N, 832, 14, 14]`` at 224x224 input)."""
        end = self._check_layer(name)
        for layer in LAYER_NAMES[:end + 1]:
            x = getattr(self, layer)(x)
        return x

    def forward_from(self, h: torch.Tensor, name: str) -> torch.Tensor:
        """Continue from the output of layer ``name`` (as returned by :meth:`forward_until`) to the end
        of the trunk (``inception_5b``), e.g. to train the upper layers on cached lower features."""
        start = self._check_layer(name)
        for layer in LAYER_NAMES[start + 1:]:
            h = getattr(self, layer)(h)
        return h

    def freeze_below(self, name: str) -> list[str]:
        """Freeze (``requires_grad=False``) every trunk layer strictly before ``name``; ``name`` and all
        later layers (and the classifiers) stay trainable. ``"none"`` unfreezes everything.

        Returns the names of the frozen layers. Frozen layers also have no dropout/BN state, so eval
        vs train mode does not matter for them.
        """
        for p in self.parameters():
            p.requires_grad_(True)
        if name == "none":
            return []
        end = self._check_layer(name)
        frozen = list(LAYER_NAMES[:end])
        for layer in frozen:
            for p in getattr(self, layer).parameters():
                p.requires_grad_(False)
        log.info("GoogLeNet: froze %d layers below %s (%d trainable parameters)", len(frozen), name,
                 sum(p.numel() for p in self.parameters() if p.requires_grad))
        return frozen

    # -- forward ----------------------------------------------------------------------------------
    def _trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        aux1 = aux2 = None
        want_aux = self.aux_logits and self.training
        for layer in LAYER_NAMES:
            x = getattr(self, layer)(x)
            if want_aux and layer == "inception_4a":
                aux1 = self.aux1(x)
            elif want_aux and layer == "inception_4d":
                aux2 = self.aux2(x)
        return x, aux1, aux2

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` -> pooled ``inception_5b`` features ``[N, 1024]`` (before dropout/classifier)."""
        return torch.flatten(self.avgpool(self.forward_until(x, "inception_5b")), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | GoogLeNetOutputs:
        h, aux1, aux2 = self._trunk(x)
        logits = self.classifier(self.dropout(torch.flatten(self.avgpool(h), 1)))
        if aux1 is not None and aux2 is not None:
            return GoogLeNetOutputs(logits, aux1, aux2)
        return logits

    def caffe_state_keys(self) -> dict[str, str]:
        """``{state_dict key: Caffe tensor key}`` for every parameter, via :data:`CAFFE_NAMES`
        (e.g. ``inception_4a.b3x3.weight`` -> ``inception_4a/3x3/weight``)."""
        out = {}
        for key in self.state_dict():
            module, _, param = key.rpartition(".")
            if module not in CAFFE_NAMES:
                raise KeyError(f"GoogLeNet parameter {key!r} has no Caffe name in CAFFE_NAMES")
            out[key] = f"{CAFFE_NAMES[module]}/{param}"
        return out


def torchvision_googlenet(num_classes: int = 1000, pretrained: bool = False) -> nn.Module:
    """torchvision's ``googlenet`` (a *different* network: BatchNorm, 3x3 instead of 5x5 in the third
    branch, RGB input normalised with ImageNet mean/std, see ``detector.weights.TORCHVISION_PREPROCESS``).

    ``pretrained=True`` downloads IMAGENET1K_V1 (only when a user explicitly selects this backbone);
    with ``num_classes != 1000`` the classifier is replaced by a fresh linear layer. No aux heads.
    """
    from torchvision.models import GoogLeNet_Weights, googlenet

    if pretrained:
        net = googlenet(weights=GoogLeNet_Weights.IMAGENET1K_V1)
    else:
        net = googlenet(weights=None, aux_logits=False, init_weights=True)
    if num_classes != 1000:
        net.fc = nn.Linear(net.fc.in_features, num_classes)
    return net
