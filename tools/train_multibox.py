"""Train the MultiBox proposal network on a detection dataset (class-agnostic), from the BVLC weights.

    python tools/train_multibox.py --config configs/multibox_googlenet_bccd.yaml --dataset voc \
        --root ../shared/data/bccd/BCCD --split trainval --out runs/multibox_bccd [--resume]

Writes RUN_DIR/last.pt (use it as proposals.multibox.checkpoint), RUN_DIR/train.log and RUN_DIR/loss.png.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from detector.cli import number, run, setup_logging
from detector.config import config_to_dict, load_config
from detector.datasets.cli import add_dataset_arguments, dataset_from_args
from detector.weights import find_weights
from proposals.multibox.train import train_multibox

log = logging.getLogger("train_multibox")


def _plot(hist, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(hist.iterations, hist.loss, lw=0.8, label="total")
    ax.plot(hist.iterations, hist.conf, lw=0.8, label="confidence")
    ax.plot(hist.iterations, hist.loc, lw=0.8, label="location")
    ax.set_xlabel("iteration")
    ax.set_ylabel("MultiBox loss per image")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", help="YAML config (its multibox_train section is used)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--weights", help="BVLC GoogLeNet .npz (default: $GOOGLENET_WEIGHTS / user cache)")
    ap.add_argument("--out", required=True, type=Path, help="run directory")
    ap.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    ap.add_argument("--seed", type=number(), help="overrides multibox_train.seed")
    add_dataset_arguments(ap)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    setup_logging(log_file=str(args.out / "train.log"))
    overrides = list(args.overrides) + ([f"multibox_train.seed={args.seed}"] if args.seed is not None else [])
    cfg = load_config(args.config, overrides).multibox_train
    log.info("multibox_train config: %s", json.dumps(config_to_dict(cfg), sort_keys=True))
    ds = dataset_from_args(args)
    weights = find_weights(args.weights)
    bar = tqdm(total=cfg.iterations, desc="multibox", unit="it")

    def progress(it: int, loss: float, ips: float) -> None:
        bar.n = it
        bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{ips:.0f}")
        bar.refresh()

    path, hist = train_multibox(ds.records, cfg, weights, args.out, args.resume, progress)
    bar.close()
    _plot(hist, args.out / "loss.png")
    print(f"checkpoint: {path}")
    print(f"final loss: {hist.loss[-1]:.4f}" if hist.loss else "final loss: n/a (nothing to train)")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
