"""PNG of the training loss (and validation mAP) curves."""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_curves"]


def plot_curves(loss: list, val: list, path: str | Path) -> Path:
    """``loss``/``val``: ``[[iteration, value], ...]``; writes a PNG with the loss (raw and a 20-step
    running mean) and, on a second axis, the validation mAP."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if loss:
        it, v = np.asarray(loss, float).T
        ax.plot(it, v, color="0.7", lw=0.8, label="loss")
        k = min(20, len(v))
        ax.plot(it[k - 1:], np.convolve(v, np.ones(k) / k, "valid"), color="C0", label=f"loss ({k}-step mean)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss")
    if val:
        ax2 = ax.twinx()
        vi, vv = np.asarray(val, float).T
        ax2.plot(vi, vv, "o-", color="C3", label="validation mAP")
        ax2.set_ylabel("validation mAP")
        ax2.legend(loc="upper right")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
