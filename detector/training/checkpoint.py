"""Training checkpoints: one file format, written atomically, checked before use.

A checkpoint is a ``torch.save``'d dict (``FORMAT_VERSION`` 1):

=================  ==========================================================================================
``format``         ``"googlenet_rcnn.classifier"``; ``format_version``: int (:data:`FORMAT_VERSION`)
``arch``           architecture id, e.g. ``"bvlc_googlenet+aux"`` (:func:`architecture_id`)
``model``          the weights to USE: the Polyak/EMA average when EMA is on, else the raw weights
                   (a ``GoogLeNet(num_classes=K + 1, aux_logits=...)`` state dict; read by
                   :func:`detector.classifier.load_checkpoint_member`)
``raw_model``      the raw (non-averaged) weights the optimizer is working on
``ema``            EMA state (``{"decay", "updates"}``) or None
``optimizer``      ``torch.optim.SGD.state_dict()``; ``scheduler``: ``StepLR.state_dict()``
``iteration``      number of completed SGD steps
``rng``            ``{"python", "numpy", "torch"}`` generator states at ``iteration``
``sampler``        :meth:`RegionSampler.state_dict` (seed; the draw is a pure function of (seed, iteration))
``config``         the resolved :class:`~detector.config.Config` as a dict (``config_to_dict``)
``classes``        K dataset class ids (output column c + 1 = class c); ``class_names``: same order
``history``        ``{"loss": [[iteration, loss], ...], "val": [[iteration, mAP], ...]}``
``best_metric``    best validation mAP so far (or None); ``weights_sha256``: the ImageNet weights used
=================  ==========================================================================================

Writes go to ``<path>.tmp`` in the same folder, are fsync'ed, then ``os.replace``'d onto ``path``: a kill
at any moment leaves either the old or the new checkpoint, never a truncated one.
"""
from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..cli import UserError

__all__ = ["FORMAT", "FORMAT_VERSION", "CheckpointError", "architecture_id", "save_atomic",
           "load_checkpoint", "check_compatible", "rng_state", "set_rng_state"]

log = logging.getLogger(__name__)

FORMAT = "googlenet_rcnn.classifier"
FORMAT_VERSION = 1


class CheckpointError(UserError):
    """A checkpoint that is unreadable or does not fit the run that wants to use it."""


def architecture_id(backbone: str, aux_logits: bool) -> str:
    """The architecture id stored in checkpoints, e.g. ``"bvlc_googlenet+aux"``."""
    return f"{backbone}_googlenet" + ("+aux" if aux_logits else "")


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (tmp file in the same folder + fsync + ``os.replace``)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)
    return p


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a training checkpoint, checking its format tag and version."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad user file
        raise CheckpointError(f"{p}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not a {FORMAT} checkpoint (format tag "
                              f"{ckpt.get('format') if isinstance(ckpt, dict) else type(ckpt).__name__!r})")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{p}: checkpoint format version {ckpt.get('format_version')}, this code reads "
                              f"version {FORMAT_VERSION}")
    return ckpt


def check_compatible(ckpt: dict, path: str | os.PathLike, classes: Sequence[str], arch: str) -> None:
    """Refuse a checkpoint whose class list or architecture differs from the run's."""
    got = list(ckpt.get("classes", []))
    if got != list(classes):
        raise CheckpointError(f"{path}: checkpoint classes {got} do not match the dataset's classes "
                              f"{list(classes)} (same classes in the same order are required)")
    if ckpt.get("arch") != arch:
        raise CheckpointError(f"{path}: checkpoint architecture {ckpt.get('arch')!r} does not match the "
                              f"configured architecture {arch!r}")


def rng_state() -> dict:
    """The python, numpy and torch global generator states."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
