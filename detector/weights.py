"""Where the ImageNet weights are, how they load (strictly), and the preprocessing they carry.

Lookup order (:func:`find_weights`): an explicit path (option / config ``model.weights``), then the environment
variable ``GOOGLENET_WEIGHTS``, then the user cache ``$XDG_CACHE_HOME/googlenet_rcnn/bvlc_googlenet.npz``
(default ``~/.cache/...``). The official file is the BVLC model zoo's ``bvlc_googlenet.caffemodel`` converted
by ``tools/convert_caffemodel.py``.

The BVLC weights expect BGR input in 0..255 minus the per-channel mean (B, G, R) = (104, 117, 123)
(:data:`BVLC_PREPROCESS`); torchvision's googlenet (a different network: BatchNorm, 3x3 third branch) expects
RGB in 0..1 normalised by the ImageNet mean/std (:data:`TORCHVISION_PREPROCESS`).
"""
from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .cli import UserError
from .config import BACKBONES
from .googlenet import GoogLeNet

__all__ = ["Preprocess", "BVLC_PREPROCESS", "TORCHVISION_PREPROCESS", "WeightsError", "find_weights",
           "load_bvlc_weights", "sha256_file", "preprocess", "preprocess_images", "build_backbone", "BACKBONES", "OFFICIAL_SHA256", "WEIGHTS_HELP"]

log = logging.getLogger(__name__)

OFFICIAL_SHA256 = "1299219d96cf5877ee13d061fd625c145c8cfeb5ff84fed033d68d96797099bb"
ENV_VAR = "GOOGLENET_WEIGHTS"
CAFFEMODEL_URL = "http://dl.caffe.berkeleyvision.org/bvlc_googlenet.caffemodel"


@dataclass(frozen=True)
class Preprocess:
    """Pixel normalisation of a weights source: RGB uint8 -> ``channel_order``, values scaled to
    ``0..scale``, then ``(v - mean) / std`` with mean/std given in ``channel_order``."""

    channel_order: str
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


BVLC_PREPROCESS = Preprocess("BGR", 255.0, (104.0, 117.0, 123.0), (1.0, 1.0, 1.0))
TORCHVISION_PREPROCESS = Preprocess("RGB", 1.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class WeightsError(UserError):
    """A weights file that is missing, unreadable, or does not fit the network."""


def _cache_path() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "googlenet_rcnn" / "bvlc_googlenet.npz"


WEIGHTS_HELP = (
    "Obtain them once: download the BVLC model zoo's {url} and run "
    "`python tools/convert_caffemodel.py bvlc_googlenet.caffemodel {cache}`; or copy an existing "
    "bvlc_googlenet.npz there; or point --weights / model.weights / ${env} at it."
)


def find_weights(explicit: str | os.PathLike | None = None) -> Path:
    """Resolve the BVLC weights file: ``explicit``, then ``$GOOGLENET_WEIGHTS``, then the user cache."""
    tried = []
    for source, cand in (("option", explicit), (f"${ENV_VAR}", os.environ.get(ENV_VAR)),
                         ("user cache", _cache_path())):
        if not cand:
            continue
        p = Path(cand).expanduser()
        if p.is_file():
            return p
        tried.append(f"{source}: {p}")
        if source == "option":  # an explicit path that does not exist is an error, not a fallback
            break
    raise WeightsError("BVLC GoogLeNet weights not found (tried " + "; ".join(tried or ["nothing"]) + "). "
                       + WEIGHTS_HELP.format(url=CAFFEMODEL_URL, cache=_cache_path(), env=ENV_VAR))


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_npz(p: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise WeightsError(f"{p}: not a readable .npz weights file (truncated or wrong format? "
                           f"{type(e).__name__}: {e})") from None


def load_bvlc_weights(model: GoogLeNet, path: str | os.PathLike, strict_classifier: bool = True) -> str:
    """Load the BVLC .npz into ``model`` strictly; return (and log) the file's sha256.

    Every trunk tensor must be present with the right shape; unexpected keys are an error. With
    ``strict_classifier=False`` the ``loss3/classifier`` tensors are skipped (a fresh K+1-way head keeps its
    initialisation). Auxiliary heads (``loss1/*``, ``loss2/*``) are not in the BVLC file and keep theirs.
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"{p}: weights file not found. "
                           + WEIGHTS_HELP.format(url=CAFFEMODEL_URL, cache=_cache_path(), env=ENV_VAR))
    if strict_classifier and model.num_classes != 1000:
        raise WeightsError(f"{p}: the BVLC classifier is 1000-way but the network has {model.num_classes} "
                           "classes; load the trunk only with strict_classifier=False")
    sha = sha256_file(p)
    log.info("reading weights %s (sha256 %s)", p, sha)
    arrays = _read_npz(p)
    keys = model.caffe_state_keys()  # state_dict key -> Caffe key, through googlenet.CAFFE_NAMES
    state = model.state_dict()
    wanted: dict[str, tuple[str, tuple[int, ...]]] = {}
    optional: dict[str, tuple[str, tuple[int, ...]]] = {}  # loaded when present (aux heads)
    for k, ck in keys.items():
        entry = (k, tuple(state[k].shape))
        if k.startswith(("aux1.", "aux2.")):
            optional[ck] = entry
        elif k.startswith("classifier.") and not strict_classifier:
            continue
        else:
            wanted[ck] = entry
    missing = sorted(set(wanted) - set(arrays))
    # Tolerated extras: the 1000-way classifier when not wanted, and the aux classifiers of a converted
    # train-time caffemodel (the shared .npz has none) when the network has no aux heads.
    tolerated = {k for k in arrays if k.startswith("loss3/classifier/")} if not strict_classifier else set()
    tolerated |= {k for k in arrays if k.startswith(("loss1/", "loss2/")) and not model.aux_logits}
    unexpected = sorted(set(arrays) - set(wanted) - set(optional) - tolerated)
    bad_shapes = [f"{ck}: file {tuple(arrays[ck].shape)} vs network {shape}"
                  for ck, (_, shape) in {**wanted, **optional}.items()
                  if ck in arrays and tuple(arrays[ck].shape) != shape]
    if missing or unexpected or bad_shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensors {unexpected[:10]}"
                         f"{' ...' if len(unexpected) > 10 else ''}")
        if bad_shapes:
            parts.append(f"wrong shapes {bad_shapes[:10]}")
        raise WeightsError(f"{p}: does not fit the BVLC GoogLeNet: " + "; ".join(parts))
    new_state = {}
    for ck, (k, _) in list(wanted.items()) + [(c, e) for c, e in optional.items() if c in arrays]:
        arr = arrays[ck]
        if arr.dtype.kind != "f" or not np.isfinite(arr).all():
            raise WeightsError(f"{p}: tensor {ck} is not finite float data (dtype {arr.dtype})")
        new_state[k] = torch.from_numpy(arr.astype(np.float32))
    model.load_state_dict(new_state, strict=False)
    fresh = sorted({k.split(".")[0] for k in state if k not in new_state})
    if fresh:
        log.info("kept fresh initialisation for %s (not loaded from %s)", fresh, p.name)
    if sha != OFFICIAL_SHA256:
        log.warning("%s: sha256 %s differs from the official converted file (%s...); names and shapes match",
                    p, sha, OFFICIAL_SHA256[:12])
    log.info("loaded BVLC GoogLeNet weights %s (sha256 %s, %d tensors)", p, sha, len(new_state))
    return sha


def preprocess(images, pre: Preprocess = BVLC_PREPROCESS) -> torch.Tensor:
    """RGB images 0..255 (uint8 or float; numpy or torch), ``[N, H, W, 3]`` (or one ``[H, W, 3]``)
    -> network input float32 ``[N, 3, H, W]`` in ``pre.channel_order``, scaled and normalised.

    BVLC: BGR, 0..255 minus (104, 117, 123). The same arithmetic as ``detector.warp``'s normalisation.
    """
    x = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected RGB images [N, H, W, 3] (or [H, W, 3]), got {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).float()
    order = pre.channel_order.upper()
    if order == "BGR":
        x = x.flip(1)
    elif order != "RGB":
        raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {pre.channel_order!r}")
    mean = torch.tensor(pre.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, dtype=torch.float32).view(1, 3, 1, 1)
    return ((x * (pre.scale / 255.0) - mean) / std).contiguous()


#: Alias kept for callers that used the earlier name.
preprocess_images = preprocess


def build_backbone(backbone: str = "bvlc", num_classes: int = 1000, weights: str | os.PathLike | None = None,
                   aux_logits: bool = False, dropout: float = 0.4) -> tuple[torch.nn.Module, Preprocess, str]:
    """An ImageNet-initialised classifier for ``ModelConfig.backbone`` -> ``(net, preprocess, source)``.

    * ``"bvlc"`` (default, the paper's network): :class:`GoogLeNet` with the BVLC weights found by
      :func:`find_weights` (``weights`` = explicit path); with ``num_classes != 1000`` only the trunk is
      loaded and the head is fresh. ``source`` = "<path> sha256 <hash>".
    * ``"torchvision"``: torchvision's ``googlenet`` with IMAGENET1K_V1 (downloaded by torchvision on first
      use, only when a user selects this backbone). A different network (BatchNorm, 3x3 third branch, RGB
      normalised input = :data:`TORCHVISION_PREPROCESS`), without ``forward_features``/``freeze_below``/aux.
    """
    if backbone == "bvlc":
        net = GoogLeNet(num_classes=num_classes, aux_logits=aux_logits, dropout=dropout)
        path = find_weights(weights)
        sha = load_bvlc_weights(net, path, strict_classifier=num_classes == 1000)
        return net, BVLC_PREPROCESS, f"{path} sha256 {sha}"
    if backbone == "torchvision":
        from .googlenet import torchvision_googlenet

        if aux_logits:
            raise UserError("model.backbone=torchvision has no auxiliary heads here; use backbone=bvlc")
        if weights:
            log.warning("model.weights=%s is ignored for backbone=torchvision (torchvision's own weights)", weights)
        log.info("torchvision googlenet IMAGENET1K_V1 (a BatchNorm variant, not the paper's network)")
        return torchvision_googlenet(num_classes, pretrained=True), TORCHVISION_PREPROCESS, \
            "torchvision googlenet IMAGENET1K_V1"
    raise UserError(f"model.backbone must be one of {BACKBONES}, got {backbone!r}")
