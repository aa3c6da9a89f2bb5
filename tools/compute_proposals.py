"""Compute (or complete) the proposal cache of a dataset split.

    python tools/compute_proposals.py --config configs/proposals_ss_paper.yaml --dataset voc \
        --root ../shared/data/bccd/BCCD --split test --out cache/bccd_paper [--workers 2]

Only missing or stale images are computed (the cache stores the proposer config it was built for); an
interrupted run continues where it stopped.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

from detector.cli import number, run, setup_logging
from detector.config import AT_LEAST_1
from detector.datasets.cli import add_dataset_arguments, dataset_from_args
from proposals.cache import add_proposer_arguments, compute_proposals, proposer_config_from_args

log = logging.getLogger("compute_proposals")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_proposer_arguments(ap)
    ap.add_argument("--out", required=True, type=Path, help="cache directory")
    ap.add_argument("--workers", type=number(int, AT_LEAST_1), default=2, help="worker processes (default 2)")
    add_dataset_arguments(ap)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    setup_logging(args.verbose)
    cfg = proposer_config_from_args(args)
    ds = dataset_from_args(args)
    t0 = time.perf_counter()
    boxes = compute_proposals(ds.records, cfg, args.out, workers=args.workers)
    wall = time.perf_counter() - t0
    n = np.array([len(b) for b in boxes.values()])
    print(f"images: {len(boxes)}")
    print(f"boxes/image: {n.mean():.1f}" if len(n) else "boxes/image: 0")
    print(f"wall seconds: {wall:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
