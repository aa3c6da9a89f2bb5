"""Reporting an :class:`EvalResult`: JSON with every number, a text table, PR curves of worst/best classes."""
from __future__ import annotations

import json
import math
from pathlib import Path

from .common import EvalResult

__all__ = ["write_json", "format_table", "plot_pr_curves"]


def write_json(result: EvalResult, path: Path, curves: bool = True) -> None:
    """``{"metric", "mAP", "per_class": [{"id","wnid","name","ap","num_gt","num_det"[,"precision","recall"]}], ...}``."""
    Path(path).write_text(json.dumps(_strict(result.to_dict(curves=curves)), indent=1, allow_nan=False))


def _strict(x):
    """NaN (AP / recall of a class without ground truth) -> null: strict JSON has no NaN."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _strict(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_strict(v) for v in x]
    return x


def format_table(result: EvalResult) -> str:
    """One line per class (``id wnid name AP num_gt num_det``), then the mean and median."""
    w = max([len(c.name) for c in result.per_class] + [8])
    lines = [f"{'id':>4} {'wnid':<10} {'category':<{w}} {'AP':>7} {'num_gt':>7} {'num_det':>8}"]
    for c in result.per_class:
        ap = "   n/a" if math.isnan(c.ap) else f"{c.ap:7.4f}"
        lines.append(f"{c.id:>4} {c.wnid:<10} {c.name:<{w}} {ap:>7} {c.num_gt:>7} {c.num_det:>8}")
    aps = sorted(c.ap for c in result.per_class if not math.isnan(c.ap))
    if aps:
        n = len(aps)
        med = aps[n // 2] if n % 2 else 0.5 * (aps[n // 2 - 1] + aps[n // 2])
        lines.append(f"Median AP: {med:.4f}")
    return "\n".join(lines)


def plot_pr_curves(result: EvalResult, path: Path, n: int = 5) -> None:
    """PNG of the precision/recall curves of the ``n`` worst and ``n`` best classes (by AP)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranked = sorted((c for c in result.per_class if not math.isnan(c.ap)), key=lambda c: c.ap)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for ax, group, title in ((axes[0], ranked[:n], f"{n} worst"), (axes[1], ranked[::-1][:n], f"{n} best")):
        for c in group:
            ax.plot(c.recall, c.precision, label=f"{c.name} ({c.ap:.3f})")
        ax.set_title(f"{title} classes, {result.metric} mAP {result.mAP:.4f}")
        ax.set_xlabel("recall")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    axes[0].set_ylabel("precision")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
