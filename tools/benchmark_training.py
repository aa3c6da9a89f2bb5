"""Training throughput of the region classifier: forward+backward regions/s and peak memory, side by side.

    python tools/benchmark_training.py [--threads 2] [--batch-size 64] [--steps 3] [--json out/bench_train.json]

Rows (one SGD step = forward, loss, backward, update; the minibatch is ready in memory, so reading and
warping are excluded, as in RUN_DIR/summary.json): R-CNN's full fine-tuning at 224x224 with the auxiliary
heads; ``freeze_below=inception_5a`` at 224 and at 128 (the frozen trunk recomputed every step); the same
from cached ``pool4`` features (detector/training/features.py: only 5a, 5b and the head run); the head-only
baseline at 128, direct and from cached features. The network starts from random weights: the cost does not
depend on their values. Peak memory is the process's maximum resident set size after each row (it only grows).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from detector.bench import peak_rss_mb
from detector.cli import number, run, setup_logging
from detector.config import AT_LEAST_1, ModelConfig, TrainConfig
from detector.training.features import forward_from_features
from detector.training.model import build_train_model

log = logging.getLogger("benchmark_training")

# (label, input size, freeze_below, from cached pool4 features)
ROWS = [
    ("full fine-tuning + aux heads (R-CNN/paper), 224", 224, "none", False),
    ("freeze_below=inception_5a, 224, trunk recomputed", 224, "inception_5a", False),
    ("freeze_below=inception_5a, 128, trunk recomputed", 128, "inception_5a", False),
    ("freeze_below=inception_5a, 128, cached pool4 features", 128, "inception_5a", True),
    ("head only (freeze all), 128, trunk recomputed", 128, "all", False),
    ("head only (freeze all), 128, cached pool4 features", 128, "all", True),
]


def step_rate(size: int, freeze_below: str, cached: bool, batch: int, steps: int) -> float:
    """Regions/s of ``steps`` SGD steps (after one warm-up step) for one configuration."""
    tc = TrainConfig(freeze_below=freeze_below, aux_loss_weight=0.3)
    torch.manual_seed(0)
    net, _, _ = build_train_model(3, ModelConfig(), tc, load_weights=False)
    net.train()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch, 3, size, size) * 50
    if cached:
        with torch.no_grad():
            x = net.forward_until(x, "pool4")
    y = torch.randint(0, 4, (batch,))

    def one() -> None:
        out = forward_from_features(net, x, "pool4") if cached else net(x)
        if isinstance(out, tuple):
            loss = F.cross_entropy(out[0], y) + 0.3 * (F.cross_entropy(out[1], y) + F.cross_entropy(out[2], y))
        else:
            loss = F.cross_entropy(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    one()
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    return batch * steps / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=number(int, AT_LEAST_1), default=2)
    ap.add_argument("--batch-size", type=number(int, AT_LEAST_1), default=64)
    ap.add_argument("--steps", type=number(int, AT_LEAST_1), default=3, help="timed steps per row (after one warm-up)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    setup_logging()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    print(f"{torch.get_num_threads()} threads, batch {args.batch_size}, load average at start {load[0]:.2f}")
    print("| configuration | fwd+bwd regions/s | peak RSS |")
    print("|---|---|---|")
    rows = []
    for label, size, fb, cached in ROWS:
        rate = step_rate(size, fb, cached, args.batch_size, args.steps)
        rows.append({"configuration": label, "regions_per_s": rate, "peak_rss_mb": peak_rss_mb()})
        print(f"| {label} | {rate:.1f} | {rows[-1]['peak_rss_mb']:.0f} MiB |", flush=True)
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"threads": args.threads, "batch_size": args.batch_size, "rows": rows,
                                         "load_start": load, "load_end": os.getloadavg()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
