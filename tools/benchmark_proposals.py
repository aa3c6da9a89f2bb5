"""Selective Search speed over a dataset: wall seconds per image, side by side in one run.

    python tools/benchmark_proposals.py --dataset voc --root ../shared/data/bccd/BCCD --split test --limit 40

Rows: the paper's setting (fast mode, superpixels 2x, width 500) with 1 and 2 worker processes, R-CNN's fast
mode (scale 1) with 2 workers, and OpenCV's own ``switchToSelectiveSearchFast()`` on one core. Every row
computes into a fresh temporary cache, so nothing is reused. The machine load is printed: other processes
share the CPU. In-process rows run OpenCV with one thread (one core). Worker rows include the start-up of the
spawned processes (they import numpy, OpenCV and ``proposals``, not torch: ~0.2 s); it is also measured on its
own and printed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import multiprocessing as mp
import numpy as np

from detector.cli import run, setup_logging
from detector.config import ProposalConfig, SelectiveSearchConfig
from detector.datasets.cli import add_dataset_arguments, dataset_from_args
from proposals.cache import init_worker, compute_proposals

ROWS = [
    ("paper (k 100/200), 1 worker", SelectiveSearchConfig(superpixel_scale=2.0), 1),
    ("paper (k 100/200), 2 workers", SelectiveSearchConfig(superpixel_scale=2.0), 2),
    ("R-CNN fast (k 50/100), 2 workers", SelectiveSearchConfig(superpixel_scale=1.0), 2),
    ("OpenCV switchToSelectiveSearchFast, 1 worker", SelectiveSearchConfig(mode="opencv_fast"), 1),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_dataset_arguments(ap)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--rows", type=int, nargs="+", choices=range(len(ROWS)), default=list(range(len(ROWS))),
                    help="which rows to run (0-based, in the order " + "; ".join(r[0] for r in ROWS) + ")")
    args = ap.parse_args(argv)
    setup_logging()
    ds = dataset_from_args(args)
    cv2.setNumThreads(1)  # in-process rows: one core
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(2, initializer=init_worker) as pool:
        pool.map(abs, range(2), chunksize=1)  # the workers start in parallel; ready once they imported proposals
    startup = time.perf_counter() - t0
    print(f"start-up of 2 spawned workers: {startup:.2f} s (included in the 2-worker rows)")
    print(f"{len(ds)} images; load average at start {os.getloadavg()[0]:.2f}")
    results = []
    print(f"{'setting':48s} {'s/image (wall)':>15s} {'boxes/image':>12s}")
    for label, ss_cfg, workers in (ROWS[i] for i in args.rows):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            boxes = compute_proposals(ds.records, ProposalConfig(selective_search=ss_cfg), Path(tmp),
                                      workers=workers, progress=False)
            wall = time.perf_counter() - t0
        per = wall / len(ds)
        nb = float(np.mean([len(b) for b in boxes.values()]))
        results.append({"setting": label, "workers": workers, "seconds_per_image": per, "boxes_per_image": nb})
        print(f"{label:48s} {per:15.3f} {nb:12.1f}", flush=True)
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"images": len(ds), "worker_startup_seconds": startup, "rows": results},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
