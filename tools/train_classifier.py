"""Fine-tune a GoogLeNet region classifier (R-CNN style) from the BVLC ImageNet weights.

    python tools/train_classifier.py --config configs/train_googlenet_bccd.yaml \
        --dataset voc --root ../shared/data/bccd/BCCD --split trainval --classes RBC,WBC,Platelets \
        --proposal-cache out/cache/bccd_ss --out out/runs/bccd_ft [--resume] [--seed S]

RUN_DIR gets ``last.pt`` (the model to use: ``--checkpoint RUN_DIR/last.pt`` / ``model.checkpoints``),
``best.pt`` (with validation), ``train.log``, ``curves.png`` and ``summary.json``. Ensemble members are
runs with different ``--seed`` (head initialisation, sampling order, dropout).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from detector.cli import UserError, run, setup_logging
from detector.config import config_to_dict, load_config
from detector.datasets.cli import add_dataset_arguments, dataset_from_args

log = logging.getLogger("train_classifier")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="YAML config (train, model, warp and proposals sections)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    ap.add_argument("--out", required=True, type=Path, help="run folder")
    ap.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    ap.add_argument("--weights", help="BVLC ImageNet weights .npz (overrides model.weights; else "
                    "$GOOGLENET_WEIGHTS or the user cache)")
    ap.add_argument("--seed", type=int, help="overrides train.seed (ensemble members differ by seed)")
    ap.add_argument("--proposal-cache", type=Path, default=Path("out/cache/proposals"),
                    help="proposal cache folder (missing entries are computed)")
    ap.add_argument("--workers", type=int, default=1, help="processes for missing proposals")
    ap.add_argument("-v", "--verbose", action="store_true")
    add_dataset_arguments(ap)
    args = ap.parse_args(argv)

    overrides = list(args.set) + ([f"train.seed={args.seed}"] if args.seed is not None else []) \
        + ([f"model.weights={args.weights}"] if args.weights else [])
    cfg = load_config(args.config, overrides)
    args.out.mkdir(parents=True, exist_ok=True)
    if (args.out / "last.pt").exists() and not args.resume:
        raise UserError(f"{args.out} already holds a run (last.pt); use --resume or another --out")
    setup_logging(args.verbose, str(args.out / "train.log"))
    log.info("config: %s", json.dumps(config_to_dict(cfg), sort_keys=True))

    from detector.training.data import region_pools, split_proposals
    from detector.training.model import build_train_model
    from detector.training.plots import plot_curves
    from detector.training.sampling import RegionSampler
    from detector.training.train import RegionLoader, train
    from detector.weights import BVLC_PREPROCESS

    tc = cfg.train
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    dataset = dataset_from_args(args)
    if len(dataset) == 0:
        raise UserError("the training split has no images")
    proposals = split_proposals(dataset, cfg.proposals, args.proposal_cache, args.workers)
    pools = region_pools(dataset, proposals, tc)
    sampler = RegionSampler(pools, tc.batch_size, tc.fg_fraction, tc.hflip, tc.seed)
    torch.manual_seed(tc.seed)  # the fresh heads are drawn from the seed
    net, sha, arch = build_train_model(len(dataset.classes), cfg.model, tc)
    log.info("weights sha256 %s; architecture %s; classes %s", sha, arch, list(dataset.classes))
    loader = RegionLoader(dataset.records, cfg.warp, BVLC_PREPROCESS, photometric=tc.photometric)
    meta = {"classes": dataset.classes, "class_names": dataset.class_names, "arch": arch,
            "config": config_to_dict(cfg), "weights_sha256": sha}

    bar = tqdm(total=tc.iterations, desc="train", unit="it", dynamic_ncols=True)

    def progress(it: int, stats: dict) -> None:
        bar.n = it
        bar.set_postfix(loss=f"{stats['loss']:.3f}", lr=f"{stats['lr']:.1e}",
                        regions_s=f"{stats['regions_per_s']:.1f}", refresh=False)
        bar.refresh()

    try:
        res = train(net, sampler, loader.load, tc, args.out, meta, resume=args.resume, progress=progress)
    finally:
        bar.close()
    plot_curves(res.loss_history, res.val_history, args.out / "curves.png")
    summary = {"iterations": res.iteration, "regions_per_s_forward_backward": round(res.regions_per_s, 2),
               "peak_memory_mb": round(res.peak_mb, 1), "final_loss": res.loss_history[-1][1] if res.loss_history else None,
               "last": str(res.last), "best": str(res.best) if res.best else None,
               "fg_regions": sampler.num_fg, "bg_regions": sampler.num_bg}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    log.info("summary: %s", json.dumps(summary))
    print(res.last)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
