"""Speed of the detector's stages on this machine, side by side in one run.

    python tools/benchmark.py [--image PHOTO] [--val-dir DIR] [--config C] [--regions 256] [--batch-size 32]
        [--naive-regions 32] [--batch1-regions 32] [--e2e-images 2] [--threads 2] [--json out/bench.json]

Measures, on the proposals of one real photo (Selective Search, the paper's proposals):
  * warped regions/s for each warp sampler (cv2 / roi_align / grid_sample), at the chosen batch size;
  * classified regions/s (warp + GoogLeNet + softmax) at batch 1 and at the chosen batch size;
  * the naive baseline: cv2 crop + resize per region (R-CNN's literal crop), one region per eager fp32
    forward (no channels-last, torch.no_grad);
  * seconds per image end to end (proposals + warp + classify + NMS) on ``--e2e-images`` images.
The machine load (``os.getloadavg``) is logged at the start and the end: other processes share the CPU.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from detector.classifier import Ensemble, build_classifier
from detector.cli import UserError, run, setup_logging
from detector.config import config_to_dict, load_config
from detector.imageio import IMAGE_EXTENSIONS, read_image
from detector.pipeline import Detector, make_proposer
from detector.warp import SAMPLERS, prepare_image, warp_prepared, warp_region_reference

log = logging.getLogger("benchmark")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", help="photo whose proposals are timed (default: skimage's chelsea)")
    ap.add_argument("--val-dir", help="folder of images for the end-to-end timing (default: --image only)")
    ap.add_argument("--config", default=None, help="detector config (default: the dataclass defaults)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--weights", help="BVLC GoogLeNet .npz")
    ap.add_argument("--devkit", help="ILSVRC devkit (meta_det.mat for the embedded default)")
    ap.add_argument("--checkpoint", action="append", default=[], help="trained classifier(s) instead")
    ap.add_argument("--regions", type=int, default=256, help="regions for the batched measurements")
    ap.add_argument("--batch-size", type=int, help="the chosen batch size (default: model.batch_size)")
    ap.add_argument("--batch1-regions", type=int, default=32, help="regions classified one at a time")
    ap.add_argument("--naive-regions", type=int, default=32, help="regions through the naive loop")
    ap.add_argument("--e2e-images", type=int, default=2, help="images timed end to end (0 = skip)")
    ap.add_argument("--threads", type=int, default=0, help="torch/cv2 threads (0 = torch default)")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("-v", "--verbose", action="store_true")
    return ap.parse_args(argv)


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def bench_warp(img, boxes, warp_cfg, batch_size: int) -> dict[str, float]:
    """Warped regions/s per sampler (each output consumed once, as the network would)."""
    out = {}
    for name in SAMPLERS:
        warp_prepared(img, boxes[:4], warp_cfg, sampler=name)  # warm-up
        t0 = time.perf_counter()
        for s in range(0, len(boxes), batch_size):
            x = warp_prepared(img, boxes[s:s + batch_size], warp_cfg, sampler=name)
            float(x.sum())
        out[name] = _rate(len(boxes), time.perf_counter() - t0)
        log.info("warp %-11s %8.0f regions/s", name, out[name])
    return out


def bench_classify(ens: Ensemble, img, boxes, warp_cfg, batch_size: int) -> dict[str, float]:
    """Warp + classify ``boxes`` with the ensemble at ``batch_size``: regions/s overall and per stage."""
    ens.batch_size = batch_size
    ens.classify_regions(img, boxes[:min(2, len(boxes))], warp_cfg)  # warm-up
    ens.timings.reset()
    t0 = time.perf_counter()
    with tqdm(total=len(boxes), desc=f"classify batch {batch_size}", unit="region", file=sys.stderr) as bar:
        ens.classify_regions(img, boxes, warp_cfg, progress=bar.update)
    total = time.perf_counter() - t0
    r = {"batch_size": batch_size, "regions": len(boxes), "regions_per_s": _rate(len(boxes), total),
         "forward_regions_per_s": _rate(len(boxes), ens.timings.classify_s),
         "warp_regions_per_s": _rate(len(boxes), ens.timings.warp_s)}
    log.info("classify batch %-3d %7.1f regions/s (forward alone %.1f/s)", batch_size, r["regions_per_s"],
             r["forward_regions_per_s"])
    return r


def bench_naive(ens: Ensemble, image: np.ndarray, boxes, warp_cfg) -> dict[str, float]:
    """cv2 crop + resize per region, one region per eager fp32 forward, default memory format."""
    members = [copy.deepcopy(m).to(memory_format=torch.contiguous_format).eval() for m in ens.members]
    pre = ens.preprocess

    def one(box):
        x = warp_region_reference(image, box, warp_cfg, pre)[None]
        with torch.no_grad():
            return sum(m(x) for m in members) / len(members)

    one(boxes[0])  # warm-up
    t0 = time.perf_counter()
    for b in tqdm(boxes, desc="naive loop", unit="region", file=sys.stderr):
        one(b)
    r = {"regions": len(boxes), "regions_per_s": _rate(len(boxes), time.perf_counter() - t0)}
    log.info("naive loop        %7.1f regions/s", r["regions_per_s"])
    return r


def bench_end_to_end(detector: Detector, paths: list[Path]) -> dict:
    per_image = []
    for p in tqdm(paths, desc="end to end", unit="img", file=sys.stderr):
        image = read_image(p)
        t0 = time.perf_counter()
        dets = detector.detect(image, p.stem)
        t = detector.last_timings
        per_image.append({"image": str(p), "size": list(image.shape[:2]), "seconds": time.perf_counter() - t0,
                          "proposals": t.num_proposals, "proposals_s": t.proposals_s, "warp_s": t.warp_s,
                          "classify_s": t.classify_s, "postprocess_s": t.postprocess_s,
                          "detections": len(dets)})
    secs = [r["seconds"] for r in per_image]
    out = {"images": per_image, "mean_seconds_per_image": float(np.mean(secs)) if secs else None}
    if secs:
        log.info("end to end: %.1f s/image (mean over %d, %.0f proposals/image)", out["mean_seconds_per_image"],
                 len(secs), np.mean([r["proposals"] for r in per_image]))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    overrides = list(args.overrides)
    if args.weights:
        overrides.append(f"model.weights={json.dumps(args.weights)}")
    if args.checkpoint:
        overrides.append(f"model.checkpoints={json.dumps(args.checkpoint)}")
    if args.threads:
        overrides.append(f"model.threads={args.threads}")
        import cv2

        cv2.setNumThreads(args.threads)
    cfg = load_config(args.config, overrides)
    log.info("config: %s", json.dumps({k: config_to_dict(getattr(cfg, k)) for k in ("proposals", "warp", "model")}))
    load_start = os.getloadavg()
    log.info("load average at start: %.2f %.2f %.2f (%d CPUs)", *load_start, os.cpu_count() or 0)
    batch = args.batch_size or cfg.model.batch_size

    if args.image:
        image, image_name = read_image(args.image), Path(args.image).stem
    else:
        import skimage.data

        image, image_name = skimage.data.chelsea(), "chelsea"
    proposer = make_proposer(cfg.proposals)
    ens = build_classifier(cfg.model, cfg.warp, meta_det=args.devkit)
    detector = Detector(proposer, ens, cfg.warp, cfg.detect)
    boxes = detector.propose(image, image_name)
    if len(boxes) == 0:
        raise UserError(f"{image_name}: no proposals to time")
    log.info("%s: %dx%d, %d proposals", image_name, image.shape[1], image.shape[0], len(boxes))
    img = prepare_image(image, ens.preprocess)
    sel = boxes[:args.regions]
    res: dict = {"image": image_name, "image_size": list(image.shape[:2]), "num_proposals": len(boxes),
                 "threads": torch.get_num_threads(), "load_start": load_start}
    res["warp_regions_per_s"] = bench_warp(img, sel, cfg.warp, batch)
    res["classify_batch1"] = bench_classify(ens, img, boxes[:args.batch1_regions], cfg.warp, 1)
    res["classify_batch"] = bench_classify(ens, img, sel, cfg.warp, batch)
    res["naive"] = bench_naive(ens, image, boxes[:args.naive_regions], cfg.warp)
    res["speedup_vs_naive"] = res["classify_batch"]["regions_per_s"] / res["naive"]["regions_per_s"]
    ens.batch_size = batch
    if args.e2e_images > 0:
        paths = [Path(args.image)] if args.image else []
        if args.val_dir:
            exts = {e.lower() for e in IMAGE_EXTENSIONS}
            paths = sorted(p for p in Path(args.val_dir).iterdir() if p.suffix.lower() in exts)
        res["end_to_end"] = bench_end_to_end(detector, paths[:args.e2e_images])
    res["load_end"] = os.getloadavg()
    log.info("load average at end: %.2f %.2f %.2f", *res["load_end"])

    print(f"| measurement ({image_name}, {torch.get_num_threads()} threads) | regions/s |")
    print("|---|---|")
    for name, v in res["warp_regions_per_s"].items():
        print(f"| warp only, sampler {name}, batch {batch} | {v:.0f} |")
    print(f"| naive: cv2 crop+resize, 1 region per eager fp32 forward | {res['naive']['regions_per_s']:.1f} |")
    print(f"| warp + classify, batch 1 | {res['classify_batch1']['regions_per_s']:.1f} |")
    print(f"| warp + classify, batch {batch} | {res['classify_batch']['regions_per_s']:.1f} |")
    print(f"| speedup batch {batch} vs naive | {res['speedup_vs_naive']:.2f}x |")
    if res.get("end_to_end", {}).get("mean_seconds_per_image"):
        e = res["end_to_end"]
        print(f"| end to end, s/image ({len(e['images'])} images) | {e['mean_seconds_per_image']:.1f} s |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1))
        log.info("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
