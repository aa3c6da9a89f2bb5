"""Proposal coverage of a dataset split: boxes/image, recall@0.5, MABO, seconds/image (recall@0.5 last).

    python tools/proposal_recall.py --config configs/proposals_ss_paper.yaml --dataset voc \
        --root ../shared/data/bccd/BCCD --split test [--cache cache/bccd_paper] [--json out.json] [--plot out.png]

Proposals come from the cache (computed there when missing; without --cache a temporary one is used).
Seconds/image is the proposer's own compute time per image, as stored in the cache when it was computed.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

from detector.cli import number, run, setup_logging
from detector.config import AT_LEAST_1, Bound, config_to_dict
from detector.datasets.cli import add_dataset_arguments, dataset_from_args
from detector.evaluation.recall import plot_recall_curves, proposal_recall
from proposals.cache import (add_proposer_arguments, cached_seconds, compute_proposals,
                             proposer_config_from_args)

log = logging.getLogger("proposal_recall")


def default_title(args: argparse.Namespace, ds) -> str:
    """'<data set folder> <split>: N images' -- the folder names the data, not the annotation format."""
    where = args.root or args.images_dir or args.annotations
    name = Path(where).name if where else ds.name
    split = args.split_file.stem if args.split_file else (args.split if args.root else "")
    return f"{name} {split}".strip() + f": {len(ds)} images"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_proposer_arguments(ap)
    ap.add_argument("--cache", type=Path, help="proposal cache directory (default: a temporary one)")
    ap.add_argument("--workers", type=number(int, AT_LEAST_1), default=2)
    ap.add_argument("--iou", type=number(float, Bound(0, 1, lo_open=True)), default=0.5)
    ap.add_argument("--ilsvrc-small", action="store_true",
                    help="use the ILSVRC per-object threshold min(0.5, wh/((w+10)(h+10))) instead of --iou")
    ap.add_argument("--json", type=Path, help="write every figure and the recall curve here")
    ap.add_argument("--plot", type=Path, help="PNG of recall vs number of proposals kept")
    ap.add_argument("--label", default=None, help="legend label of the curve (default: the config name)")
    ap.add_argument("--title", default=None,
                    help="plot title (default: the data set's folder, split and image count, e.g. 'BCCD test: 72 images')")
    ap.add_argument("--compare", metavar="M1,M2,...",
                    help="several proposal methods (e.g. ss,multibox,ss+multibox), one figure each and all "
                    "curves in one --plot; caches in --cache/<method>")
    add_dataset_arguments(ap)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    setup_logging(args.verbose)
    ds = dataset_from_args(args)
    methods = args.compare.split(",") if args.compare else [None]
    reports = {}
    for method in methods:
        if method is not None:
            args.method = method
        cfg = proposer_config_from_args(args)
        with tempfile.TemporaryDirectory() as tmp:
            cache = args.cache or Path(tmp)
            if method is not None:
                cache = cache / method  # one cache per proposer config
            boxes = compute_proposals(ds.records, cfg, cache, workers=args.workers)
            secs = np.array([cached_seconds(r, cache) for r in ds.records])
        rep = proposal_recall(ds.records, boxes, iou=args.iou, ilsvrc_small=args.ilsvrc_small)
        known = secs[~np.isnan(secs)]
        rep.seconds_per_image = float(known.mean()) if len(known) else math.nan
        label = method or args.label or (Path(args.config).stem if args.config else cfg.method)
        reports[label] = (cfg, rep)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {k: {"config": config_to_dict(c), **r.as_dict()} for k, (c, r) in reports.items()}
        args.json.write_text(json.dumps(payload if args.compare else next(iter(payload.values())), indent=2))
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot_recall_curves({k: r for k, (_, r) in reports.items()}, str(args.plot),
                           title=args.title or default_title(args, ds))
    thr = "ilsvrc" if args.ilsvrc_small else f"{args.iou:g}"
    for label, (_, rep) in reports.items():
        if args.compare:
            print(f"== {label}")
        print(f"images: {rep.num_images}  ground-truth boxes: {rep.num_gt}")
        print(f"boxes/image: {rep.boxes_per_image:.1f}")
        print(f"MABO: {rep.mabo:.4f}")
        print(f"seconds/image: {rep.seconds_per_image:.3f}")
        print(f"recall@{thr}: {rep.recall:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
