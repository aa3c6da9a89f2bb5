"""Validation mAP during training: detection over a held-out split with the project's evaluator.

:class:`SplitValidator` is the ``validate(model) -> mAP`` callable of :func:`detector.training.train.train`.
It runs the model being trained over every proposal of the validation images, applies the detector's
own post-processing (per-class NMS, score threshold, top-k: detector.pipeline.select_detections) and
scores the detections with ``detector.evaluation.evaluate`` (VOC area AP at IoU 0.5 by default). With
``feature_layer`` set, the frozen trunk's features of the validation regions are computed once
(detector.training.features) and each validation runs only the trainable top.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..config import DetectConfig, WarpConfig
from ..structures import Dataset
from ..warp import PreprocessLike
from .features import FeatureCache, forward_from_features
from .sampling import RegionPool
from .split_eval import classify_split, detections_from_probs

__all__ = ["SplitValidator"]

log = logging.getLogger(__name__)


class SplitValidator:
    """``validator(model) -> mAP`` of ``model`` on ``dataset`` with the given per-image ``proposals``
    (float32 ``[N_i, 4]`` xyxy). ``feature_net``/``feature_layer``: precompute that frozen layer's output
    once with ``feature_net`` (which must share the model's frozen weights)."""

    def __init__(self, dataset: Dataset, proposals: Sequence[np.ndarray], warp_cfg: WarpConfig,
                 preprocess: PreprocessLike, detect_cfg: DetectConfig, metric: str = "voc",
                 feature_net: nn.Module | None = None, feature_layer: str = "", batch_size: int = 64,
                 cache_dir=None, key: dict | None = None) -> None:
        if len(dataset) != len(proposals):
            raise ValueError(f"{len(proposals)} proposal sets for {len(dataset)} validation images")
        self.dataset, self.proposals = dataset, [np.asarray(p, np.float32).reshape(-1, 4) for p in proposals]
        self.warp_cfg, self.preprocess, self.detect_cfg = warp_cfg, preprocess, detect_cfg
        self.metric, self.batch_size, self.layer = metric, batch_size, feature_layer
        self.features = None
        if feature_layer:
            if feature_net is None:
                raise ValueError("feature_layer needs feature_net")
            pools = [RegionPool(p, np.zeros(len(p), np.int64), np.zeros(len(p), np.float32)) for p in self.proposals]
            self.features = FeatureCache.build(dataset.records, pools, feature_net, feature_layer, warp_cfg,
                                               preprocess, flips=1, cache_dir=cache_dir, key=key,
                                               batch_size=batch_size)

    @torch.inference_mode()
    def probabilities(self, model: nn.Module) -> list[np.ndarray]:
        """Softmax ``[N_i, K + 1]`` of every validation proposal (model put in eval mode)."""
        model.eval()
        if self.features is None:
            return classify_split(self.dataset.records, self.proposals, [model], self.preprocess, self.warp_cfg,
                                  self.batch_size)[0]
        out = []
        for f in self.features.feats:
            k1 = model.num_classes
            p = np.zeros((len(f), k1), np.float32)
            for s in range(0, len(f), 256):
                h = torch.from_numpy(f[s:s + 256, 0].astype(np.float32))
                p[s:s + 256] = torch.softmax(forward_from_features(model, h, self.layer).float(), 1).numpy()
            out.append(p)
        return out

    def __call__(self, model: nn.Module) -> float:
        from ..evaluation import evaluate

        probs = self.probabilities(model)
        dets = detections_from_probs(self.proposals, probs, self.detect_cfg)
        r = evaluate(self.dataset, {rec.image_id: d for rec, d in zip(self.dataset.records, dets)}, self.metric)
        return float(r.mAP)
