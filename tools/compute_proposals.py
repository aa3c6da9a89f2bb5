"""Compute (or complete) the proposal cache of a dataset split.

    python tools/compute_proposals.py --config configs/proposals_ss_paper.yaml --dataset voc \
        --root ../shared/data/bccd/BCCD --split test --out cache/bccd_paper [--workers 2]

Only missing or stale images are computed (the cache stores the proposer config it was built for); an
interrupted run continues where it stopped.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from detector.cli import run, setup_logging
from detector.config import config_to_dict, load_config
from detector.datasets.cli import add_dataset_arguments, dataset_from_args
from proposals.cache import compute_proposals

log = logging.getLogger("compute_proposals")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", help="YAML config (its proposals section is used)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, e.g. proposals.selective_search.superpixel_scale=1")
    ap.add_argument("--method", choices=["ss", "multibox", "ss+multibox"], help="overrides proposals.method")
    ap.add_argument("--out", required=True, type=Path, help="cache directory")
    ap.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    add_dataset_arguments(ap)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    setup_logging(args.verbose)
    overrides = list(args.overrides) + ([f"proposals.method={args.method}"] if args.method else [])
    cfg = load_config(args.config, overrides).proposals
    log.info("proposer config: %s", json.dumps(config_to_dict(cfg), sort_keys=True))
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
