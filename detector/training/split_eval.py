"""Detection over a whole split with one or several trained classifiers, sharing their frozen trunk.

Classifiers fine-tuned with ``freeze_below`` (and the head-only baseline) carry bit-identical ImageNet
weights below their freeze point. :func:`classify_split` finds the longest prefix of GoogLeNet layers on
which all given networks agree (:func:`shared_prefix`), runs that prefix ONCE per region and only the
differing upper layers per network. This is exact (the same arithmetic as running each network alone)
and makes evaluating a head-only baseline, a fine-tuned model and an ensemble cost little more than
evaluating one model -- on a CPU the trunk is the cost (docs/sections/training.md).

Outputs per network and image are float32 ``[N, K + 1]`` softmax probabilities (column 0 background);
an ensemble averages them (detector.classifier.Ensemble does the same); :func:`detections_from_probs`
then applies the pipeline's own post-processing (detector.pipeline.select_detections).
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np
import torch

from ..config import DetectConfig, WarpConfig
from ..imageio import read_image
from ..pipeline import select_detections
from ..structures import Detections, ImageRecord
from ..warp import PreprocessLike, prepare_image, warp_prepared

__all__ = ["shared_prefix", "classify_split", "detections_from_probs"]

log = logging.getLogger(__name__)


def shared_prefix(nets: Sequence[torch.nn.Module]) -> str | None:
    """The last GoogLeNet layer up to which all ``nets`` have identical weights (None: not even conv1)."""
    from ..googlenet import LAYER_NAMES

    last = None
    states = [n.state_dict() for n in nets]
    for layer in LAYER_NAMES:
        keys = [k for k in states[0] if k.startswith(layer + ".")]
        if any(not all(torch.equal(s[k], states[0][k]) for k in keys) for s in states[1:]):
            break
        last = layer
    return last


@torch.inference_mode()
def classify_split(records: Sequence[ImageRecord], proposals: Sequence[np.ndarray],
                   nets: Sequence[torch.nn.Module], preprocess: PreprocessLike, warp_cfg: WarpConfig,
                   batch_size: int = 64, progress: Callable[[int], None] | None = None,
                   outputs_probs: bool = False) -> list[list[np.ndarray]]:
    """Softmax probabilities of every proposal under every network.

    ``proposals[i]``: float32 ``[N_i, 4]`` xyxy boxes of ``records[i]``. Returns ``probs[m][i]`` float32
    ``[N_i, K + 1]`` for network ``m``. ``progress(n)`` is called with the number of regions done.
    ``outputs_probs``: the networks already return probabilities (whole region classifiers, e.g. the ONNX
    Runtime members of detector.backends), not logits; no shared prefix is then looked for.
    """
    for n in nets:
        n.eval()
    prefix = shared_prefix(nets) if len(nets) > 1 and not outputs_probs else None
    if prefix is not None:
        log.info("%d networks share their weights up to %s: that part runs once per region", len(nets), prefix)
    out: list[list[np.ndarray]] = [[] for _ in nets]
    for rec, boxes in zip(records, proposals):
        k1 = nets[0].num_classes + (1 if outputs_probs else 0)  # classifiers count K, networks K + 1
        probs = [np.zeros((len(boxes), k1), np.float32) for _ in nets]
        if len(boxes):
            img = prepare_image(read_image(rec.image_path), preprocess)
            for start in range(0, len(boxes), batch_size):
                sl = slice(start, min(start + batch_size, len(boxes)))
                x = warp_prepared(img, boxes[sl], warp_cfg)
                h = nets[0].forward_until(x, prefix) if prefix is not None else None
                for m, net in enumerate(nets):
                    if h is not None:
                        f = net.forward_from(h, prefix)
                        logits = net.classifier(net.dropout(torch.flatten(net.avgpool(f), 1)))
                    else:
                        logits = net(x)
                    probs[m][sl] = (logits.float() if outputs_probs else torch.softmax(logits.float(), 1)).numpy()
                if progress is not None:
                    progress(sl.stop - sl.start)
        for m in range(len(nets)):
            out[m].append(probs[m])
    return out


def detections_from_probs(proposals: Sequence[np.ndarray], probs: Sequence[np.ndarray],
                          cfg: DetectConfig) -> list[Detections]:
    """Per-image :class:`Detections` from boxes + probabilities (the pipeline's NMS / top-k rules)."""
    return [select_detections(b, p, cfg.nms_threshold, cfg.score_threshold, cfg.max_per_image)
            for b, p in zip(proposals, probs)]
