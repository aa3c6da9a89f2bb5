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

from detector.cli import UserError, number, run, setup_logging
from detector.config import AT_LEAST_1, config_to_dict, load_config
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
    ap.add_argument("--seed", type=number(), help="overrides train.seed (ensemble members differ by seed)")
    ap.add_argument("--proposal-cache", type=Path, default=Path("out/cache/proposals"),
                    help="proposal cache folder (missing entries are computed)")
    ap.add_argument("--workers", type=number(int, AT_LEAST_1), default=1, help="processes for missing proposals")
    ap.add_argument("--feature-cache", type=Path, default=Path("out/cache/features"),
                    help="with train.feature_layer: folder of cached frozen-trunk features (one per data set "
                    "and layer; shared by runs that differ only in seed)")
    ap.add_argument("--val-split", help="voc: image set to validate on every train.eval_every steps")
    ap.add_argument("--val-split-file", type=Path, help="voc: image-set file to validate on")
    ap.add_argument("--val-limit", type=number(), default=0, help="validate on the first N of those images")
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
    torch.manual_seed(tc.seed)  # the fresh heads are drawn from the seed
    net, sha, arch = build_train_model(len(dataset.classes), cfg.model, tc)
    log.info("weights sha256 %s; architecture %s; classes %s", sha, arch, list(dataset.classes))
    meta = {"classes": dataset.classes, "class_names": dataset.class_names, "arch": arch,
            "config": config_to_dict(cfg), "weights_sha256": sha}
    forward, load, feat_key = None, None, None
    if tc.feature_layer:
        from detector.training.features import FeatureCache, check_feature_layer, forward_from_features
        from detector.training.features import cache_dir_for, restrict_pools

        check_feature_layer(net, tc.feature_layer)
        if tc.photometric:
            raise UserError("train.photometric changes the frozen layers' input every step: it cannot be "
                            "combined with train.feature_layer")
        pools = restrict_pools(pools, tc.max_fg_per_image, tc.max_bg_per_image)
        feat_key = {"weights_sha256": sha, "dataset": dataset.name, "proposals": config_to_dict(cfg.proposals),
                    "max_fg_per_image": tc.max_fg_per_image, "max_bg_per_image": tc.max_bg_per_image}
        cache_dir = cache_dir_for(args.feature_cache, f"{dataset.name}_{tc.feature_layer}", feat_key, dataset.records)
        with tqdm(total=sum(len(p.labels) for p in pools) * (2 if tc.hflip else 1), desc="frozen features",
                  unit="reg", dynamic_ncols=True) as fbar:
            feats = FeatureCache.build(dataset.records, pools, net, tc.feature_layer, cfg.warp, BVLC_PREPROCESS,
                                       flips=2 if tc.hflip else 1, cache_dir=cache_dir, key=feat_key,
                                       progress=fbar.update)
        load, forward = feats.load, (lambda m, h: forward_from_features(m, h, tc.feature_layer))
    else:
        load = RegionLoader(dataset.records, cfg.warp, BVLC_PREPROCESS, photometric=tc.photometric).load
    sampler = RegionSampler(pools, tc.batch_size, tc.fg_fraction, tc.hflip, tc.seed)
    validate = _validator(args, cfg, net, feat_key, dataset.classes)

    bar = tqdm(total=tc.iterations, desc="train", unit="it", dynamic_ncols=True)

    def progress(it: int, stats: dict) -> None:
        bar.n = it
        bar.set_postfix(loss=f"{stats['loss']:.3f}", lr=f"{stats['lr']:.1e}",
                        regions_s=f"{stats['regions_per_s']:.1f}", refresh=False)
        bar.refresh()

    try:
        res = train(net, sampler, load, tc, args.out, meta, resume=args.resume, progress=progress,
                    validate=validate, forward=forward)
    finally:
        bar.close()
    plot_curves(res.loss_history, res.val_history, args.out / "curves.png")
    summary = {"iterations": res.iteration, "regions_per_s_forward_backward": round(res.regions_per_s, 2),
               "peak_memory_mb": round(res.peak_mb, 1), "final_loss": res.loss_history[-1][1] if res.loss_history else None,
               "last": str(res.last), "best": str(res.best) if res.best else None,
               "fg_regions": sampler.num_fg, "bg_regions": sampler.num_bg,
               "validation": res.val_history, "best_metric": max((v for _, v in res.val_history), default=None)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    log.info("summary: %s", json.dumps(summary))
    print(res.last)
    return 0


def _validator(args, cfg, net, feat_key, classes):
    """The validation-mAP callable for ``--val-split``/``--val-split-file`` (None without them)."""
    if args.val_split is None and args.val_split_file is None:
        if cfg.train.eval_every > 0:
            log.info("no --val-split/--val-split-file: training without validation (best.pt is not written)")
        return None
    from detector.training.data import split_proposals
    from detector.training.validate import SplitValidator
    from detector.weights import BVLC_PREPROCESS

    vargs = argparse.Namespace(**{**vars(args), "split": args.val_split or args.split,
                                  "split_file": args.val_split_file, "limit": args.val_limit})
    val = dataset_from_args(vargs)
    if len(val) == 0:
        raise UserError("the validation split has no images")
    if tuple(val.classes) != tuple(classes):
        raise UserError(f"validation classes {list(val.classes)} differ from training's {list(classes)} "
                        "(pass --classes)")
    props = split_proposals(val, cfg.proposals, args.proposal_cache, args.workers)
    layer = cfg.train.feature_layer
    key = {**feat_key, "dataset": "val:" + val.name} if feat_key else None
    cache = None
    if layer:
        from detector.training.features import cache_dir_for
        cache = cache_dir_for(args.feature_cache, f"val_{val.name}_{layer}", key, val.records)
    log.info("validation: %d images, %d proposals", len(val), sum(len(p) for p in props))
    return SplitValidator(val, props, cfg.warp, BVLC_PREPROCESS, cfg.detect, "voc", net if layer else None,
                          layer, cache_dir=cache, key=key)


if __name__ == "__main__":
    sys.exit(run(main))
