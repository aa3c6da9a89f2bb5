"""The network being fine-tuned: BVLC GoogLeNet trunk + fresh (K + 1)-way head (+ fresh aux heads).

``freeze_below``: ``"none"`` trains everything; a GoogLeNet layer name (e.g. ``"inception_5a"``) trains
that layer and everything after it (detector.googlenet.GoogLeNet.freeze_below); ``"all"`` trains only the
new classifier on frozen ImageNet features (the "head only" baseline). Output column 0 is background,
column ``c + 1`` the dataset class ``c`` (detector.classifier's convention).
"""
from __future__ import annotations

import logging

from torch import nn

from ..config import ConfigError, ModelConfig, TrainConfig
from .checkpoint import architecture_id

__all__ = ["build_train_model", "freeze"]

log = logging.getLogger(__name__)


def freeze(net: nn.Module, freeze_below: str) -> None:
    """Apply ``freeze_below`` (``none`` | ``all`` | a GoogLeNet layer name) to ``net``."""
    if freeze_below == "all":
        net.freeze_below("none")
        for name, p in net.named_parameters():
            p.requires_grad_(name.startswith(("classifier.", "aux1.", "aux2.")))
        log.info("GoogLeNet: trunk frozen, training the heads only (%d parameters)",
                 sum(p.numel() for p in net.parameters() if p.requires_grad))
    else:
        try:
            net.freeze_below(freeze_below)
        except ValueError as e:
            raise ConfigError(f"train.freeze_below: {e} (or 'none' / 'all')") from None


def build_train_model(num_fg_classes: int, model_cfg: ModelConfig, train_cfg: TrainConfig,
                      load_weights: bool = True) -> tuple[nn.Module, str | None, str]:
    """GoogLeNet(num_classes=K + 1) from the BVLC ImageNet weights (trunk only; fresh heads).

    Auxiliary heads are built when ``train_cfg.aux_loss_weight > 0`` and the layers they feed
    (inception_4a..4d) are trainable. The head initialisation draws from torch's generator, so seed
    it first (ensemble members differ by seed). Returns ``(net, weights sha256 or None, arch id)``.
    """
    from ..googlenet import GoogLeNet
    from ..weights import find_weights, load_bvlc_weights

    if model_cfg.backbone != "bvlc":
        raise ConfigError(f"training supports model.backbone=bvlc only, got {model_cfg.backbone!r}")
    from ..googlenet import LAYER_NAMES

    aux = train_cfg.aux_loss_weight > 0
    fb = train_cfg.freeze_below
    if aux and (fb == "all" or (fb in LAYER_NAMES and LAYER_NAMES.index(fb) > LAYER_NAMES.index("inception_4d"))):
        # the auxiliary heads only shape the layers below them (paper section 5); with those frozen they
        # would train in isolation and never be used, so they are left out
        log.info("auxiliary heads off: the layers they feed (<= inception_4d) are frozen (freeze_below=%s)", fb)
        aux = False
    net = GoogLeNet(num_classes=num_fg_classes + 1, aux_logits=aux, dropout=0.4)
    sha = None
    if load_weights:
        sha = load_bvlc_weights(net, find_weights(model_cfg.weights), strict_classifier=False)
        # fresh heads drawn after loading (gaussian 0.01 as R-CNN's fc8), so the seed alone decides them
        net.reset_classifier(num_fg_classes + 1)
    freeze(net, train_cfg.freeze_below)
    return net, sha, architecture_id(model_cfg.backbone, aux)
