"""Run trained classifiers over a whole dataset split and evaluate them in one go.

    python tools/detect_split.py --checkpoints out/runs/a/last.pt out/runs/b/last.pt --ensemble \
        --dataset voc --root ../shared/data/bccd/BCCD --split test --classes RBC,WBC,Platelets \
        --proposal-cache out/cache/bccd_ss --out out/eval/bccd

Each checkpoint is evaluated alone (and, with ``--ensemble``, the average of all of their softmax outputs,
as ``model.checkpoints`` does in tools/detect.py). Layers on which the checkpoints agree bit for bit (the
frozen ImageNet trunk) run once per region (detector.training.split_eval). Proposals come from the
proposal cache (computed when missing); the warp is the one the checkpoints were trained with. Writes
``probs.npz`` (every region's probabilities, so the evaluation can be redone without the network),
``results.json`` (mAP and per-class AP per model) and prints one line per model, mAP last.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from detector.cli import UserError, number, run, setup_logging
from detector.config import AT_LEAST_1, WarpConfig, config_to_dict, from_dict, load_config
from detector.datasets.cli import add_dataset_arguments, dataset_from_args

log = logging.getLogger("detect_split")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", nargs="+", required=True, type=Path, help="training checkpoints (last.pt)")
    ap.add_argument("--from-probs", action="store_true",
                    help="re-evaluate OUT/probs.npz of an earlier run instead of running the networks")
    ap.add_argument("--names", help="comma-separated display names, one per checkpoint")
    ap.add_argument("--ensemble", nargs="?", const="all", metavar="NAMES",
                    help="also evaluate the average of the checkpoints named (comma-separated; default all)")
    ap.add_argument("--config", help="YAML config (proposals and detect sections are used)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    ap.add_argument("--proposal-cache", type=Path, default=Path("out/cache/proposals"))
    ap.add_argument("--max-proposals", type=number(), default=None,
                    help="keep the first N proposals per image (0: all; default: the config's detect.max_proposals)")
    ap.add_argument("--workers", type=number(int, AT_LEAST_1), default=1, help="processes for missing proposals")
    ap.add_argument("--metric", default="voc", help="evaluation metric (detector.evaluation): voc | voc07 | coco")
    ap.add_argument("--batch-size", type=number(int, AT_LEAST_1), default=32)
    ap.add_argument("--threads", type=number(), default=0)
    ap.add_argument("--backend", default="eager", choices=["eager", "onnx", "onnx_int8", "torch_int8", "mnn"],
                    help="region classification backend (detector/backends.py, onnx* need pip install -e '.[onnx]', "
                    "mnn pip install -e '.[mnn]'; torch_int8: detector/quantized.py)")
    ap.add_argument("--calibrate-on", nargs="+", type=Path, default=[], metavar="IMAGE",
                    help="onnx_int8 and torch_int8: images whose Selective Search regions calibrate the quantisation (use "
                    "training images of the same domain; default: scikit-image's bundled photos)")
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    ap.add_argument("-v", "--verbose", action="store_true")
    add_dataset_arguments(ap)
    args = ap.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    setup_logging(args.verbose, str(args.out / "detect_split.log"))
    cfg = load_config(args.config, args.set)
    log.info("config: %s", json.dumps(config_to_dict(cfg), sort_keys=True))
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    names = args.names.split(",") if args.names else [p.parent.name or p.stem for p in args.checkpoints]
    if len(names) != len(args.checkpoints):
        raise UserError(f"--names gives {len(names)} names for {len(args.checkpoints)} checkpoints")

    from detector.classifier import load_checkpoint_member
    from detector.training.checkpoint import load_checkpoint
    from detector.training.split_eval import detections_from_probs

    members, warps = [], []
    for p in args.checkpoints:
        ck = load_checkpoint(p)
        warps.append(from_dict(WarpConfig, ck["config"].get("warp", {}), source=f"{p} (warp)"))
        members.append(load_checkpoint_member(p, warps[-1]))
    for n, m, w in zip(names, members[1:], warps[1:]):
        if m.classes != members[0].classes or w != warps[0]:
            raise UserError(f"{n}: checkpoints must share classes and warp settings to be evaluated together")
    warp = warps[0]
    dataset = dataset_from_args(args)
    if tuple(dataset.classes) != members[0].classes:
        raise UserError(f"dataset classes {list(dataset.classes)} differ from the checkpoints' "
                        f"{list(members[0].classes)} (pass --classes in the same order)")
    if args.from_probs:
        names, proposals, probs, total, secs = _read_probs(args.out / "probs.npz", len(dataset))
    else:
        names, proposals, probs, total, secs = _classify(args, cfg, dataset, members, warp, names)
    from detector.evaluation import evaluate  # the project's evaluator (VOC area AP for --metric voc)

    results = {"images": len(dataset), "regions": total, "seconds": round(secs, 1),
               "checkpoints": [str(p) for p in args.checkpoints], "models": {}}
    for n, pm in zip(names, probs):
        dets = detections_from_probs(proposals, pm, cfg.detect)
        r = evaluate(dataset, {rec.image_id: d for rec, d in zip(dataset.records, dets)}, args.metric)
        results["models"][n] = r.to_dict()
        print(f"{n}: mAP {r.mAP:.4f} " + " ".join(f"{c.name}={c.ap:.4f}" for c in r.per_class))
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    return 0


def _read_probs(path: Path, n_images: int):
    if not path.is_file():
        raise UserError(f"{path}: no saved probabilities (run without --from-probs first)")
    with np.load(path) as z:
        names = [str(x) for x in z["names"]]
        if f"boxes_img{n_images - 1}" not in z or f"boxes_img{n_images}" in z:
            raise UserError(f"{path}: saved for a different number of images than the dataset's {n_images}")
        proposals = [z[f"boxes_img{i}"] for i in range(n_images)]
        probs = [[z[f"m{m}_img{i}"] for i in range(n_images)] for m in range(len(names))]
    return names, proposals, probs, int(sum(len(p) for p in proposals)), float("nan")


def _classify(args, cfg, dataset, members, warp, names):
    from detector.training.data import split_proposals
    from detector.training.split_eval import classify_split

    if args.max_proposals is not None:  # the flag overrides the config (and is checked as it is)
        cfg.detect = dataclasses.replace(cfg.detect, max_proposals=args.max_proposals)
    proposals = split_proposals(dataset, cfg.proposals, args.proposal_cache, args.workers, cfg.detect.max_proposals)
    total = int(sum(len(p) for p in proposals))
    log.info("classifying %d regions of %d images with %d network(s), warp %s", total, len(dataset),
             len(members), config_to_dict(warp))
    t0 = time.perf_counter()
    nets, is_probs = [m.net for m in members], False
    if args.backend == "eager":  # what an eager Ensemble runs: the LRN kernel, fused convolutions, Winograd, ...
        from detector.classifier import prepare_inference

        for net in nets:
            prepare_inference(net, cfg.model.lrn_kernel, cfg.model.channels_last,
                              (cfg.model.eager_kernels, cfg.model.winograd))
    elif args.backend == "torch_int8":
        from detector.imageio import read_image
        from detector.quantized import convert_members_int8

        nets = convert_members_int8(members, warp, cfg.model.int8_lrn_sums, cfg.model.int8_calibration,
                                    [read_image(p) for p in args.calibrate_on] or None,
                                    weight_bits=cfg.model.int8_weight_bits)
        is_probs = True
    elif args.backend != "eager":
        from detector.backends import CalibrationSet, default_cache_dir, int8_recipe, onnx_members
        from detector.imageio import read_image

        calib = None
        if args.backend == "onnx_int8":
            imgs = [read_image(p) for p in args.calibrate_on] or None
            calib = CalibrationSet(members[0].preprocess, warp, imgs)
        # --set model.int8_...
        recipe = int8_recipe(cfg.model.int8_lrn_sums, cfg.model.int8_calibration, cfg.model.int8_weight_bits)
        nets = onnx_members(members, args.backend, default_cache_dir(), args.threads, calib, warp.size, recipe,
                            cfg.model.onnx_lrn, cfg.model.winograd)
        is_probs = True
    with tqdm(total=total, desc="regions", unit="reg", dynamic_ncols=True) as bar:
        probs = classify_split(dataset.records, proposals, nets, members[0].preprocess, warp, args.batch_size,
                               progress=bar.update, outputs_probs=is_probs)
    secs = time.perf_counter() - t0
    log.info("%.1f s, %.1f regions/s (all networks)", secs, total / max(secs, 1e-9))
    if args.ensemble:
        chosen = list(names) if args.ensemble == "all" else args.ensemble.split(",")
        unknown = [c for c in chosen if c not in names]
        if unknown:
            raise UserError(f"--ensemble names {unknown} are not among --names {names}")
        idx = [names.index(c) for c in chosen]
        names.append("ensemble(" + "+".join(chosen) + ")")
        probs.append([np.mean([probs[m][i] for m in idx], axis=0) for i in range(len(dataset))])
    np.savez_compressed(args.out / "probs.npz", names=np.array(names),
                        **{f"m{m}_img{i}": probs[m][i] for m in range(len(names)) for i in range(len(dataset))},
                        **{f"boxes_img{i}": proposals[i] for i in range(len(dataset))})
    return names, proposals, probs, total, secs


if __name__ == "__main__":
    sys.exit(run(main))
