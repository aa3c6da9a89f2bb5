"""Polyak averaging (the paper: "Polyak averaging was used to create the final model"), implemented as
an exponential moving average of the weights, as is usual today.

``ema = decay_t * ema + (1 - decay_t) * w`` after every step, with the warm-up
``decay_t = min(decay, (1 + t) / (10 + t))`` (t = number of updates) so that early averages are not
dominated by the ImageNet initialisation of the new head.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["ModelEMA"]


class ModelEMA:
    """An averaged copy of ``model``'s state (parameters and float buffers)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if s.dtype.is_floating_point:
                s.mul_(d).add_(v.detach(), alpha=1.0 - d)
            else:
                s.copy_(v)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates,
                "shadow": {k: v.clone() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.updates = int(state["updates"])
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}

    def averaged_model(self, model: nn.Module) -> nn.Module:
        """A copy of ``model`` carrying the averaged weights."""
        m = copy.deepcopy(model)
        m.load_state_dict(self.shadow)
        return m
