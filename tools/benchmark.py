"""Speed of the detector's stages on this machine, side by side in one run.

    python tools/benchmark.py [--image PHOTO] [--val-dir DIR] [--config C] [--regions 256] [--batch-size 8]
        [--rounds 4] [--per-round 16] [--e2e-images 2] [--threads 2] [--random-boxes] [--json out/bench.json]
        [--onnx] [--compile] [--no-torch-int8] [--batch-sizes 1,8,32,64] [--ss-images 4] [--ensemble 3]
        [--folder-images 4] [--command-runs 3 --command-backend mnn]

Measures, on the proposals of one real photo (Selective Search, the paper's proposals; or --random-boxes):
  * warped regions/s for each warp sampler (cv2 / roi_align / grid_sample), at the chosen batch size;
  * classified regions/s (warp + GoogLeNet + softmax) at batch 1 and at the chosen batch size,
    interleaved in rounds with the naive loop so that all see the same machine load; the LRNs as the fused
    kernel (``model.lrn_kernel`` / ``model.onnx_lrn``) and, beside it, as torch / ONNX graph operators;
  * the naive baseline: cv2 crop + resize per region (R-CNN's literal crop), one region per eager fp32
    forward (torch's LRN, no channels-last, torch.no_grad);
  * seconds per image end to end (proposals + warp + classify + NMS) on ``--e2e-images`` images, for one
    model and a ``--ensemble``-member ensemble, per backend (fp32; torch int8 unless ``--no-torch-int8``;
    ONNX fp32/int8 with ``--onnx``);
  * Selective Search s/image (the config's proposals) with 1 and 2 worker processes (``--ss-images``);
  * regions/s of every backend over ``--batch-sizes`` (the best is reported); torch.compile with ``--compile``;
  * a folder of ``--folder-images`` images one by one, with the Selective Search overlap and with
    ``--folder-image-workers`` image workers (tools/detect.py's --overlap-workers / --image-workers), with the
    fastest int8 backend built (torch int8, else ONNX Runtime int8, else eager fp32);
  * peak resident memory after 256 and 2,048 regions (``--memory-regions``; bounded: regions are streamed in
    batches);
  * with ``--command-runs N``: N pairs of whole ``tools/detect.py`` commands on the photo (fresh processes;
    start-up and model loading included), the first image's proposals computed in a worker while the models
    load (the default) and with ``--no-early-proposals``, alternating (``--command-backend``);
  * the ceiling (``--no-ceiling`` skips it): each runtime's GMAC/s on chains of large convolutions
    (detector.ceiling), the share of it each classification row reaches with the classifier's multiply-adds,
    and the least time the photo's regions can take at that rate.
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

from detector import cpu
from detector.bench import (bench_batch_sizes, bench_detect_command, bench_end_to_end, bench_folder,
                             bench_folder_workers, bench_memory, bench_selective_search, compiled_ensemble,
                             peak_rss_mb, replicated_ensemble)
from detector.bench_report import extra_methods, load_result, method_labels, plot_benchmark, recommend
from detector.ceiling import ceilings, conv_rates, count_macs, floor_seconds
from detector.classifier import Ensemble, batch_size_for, build_classifier, plain_lrn
from detector.cli import UserError, number, run, setup_logging
from detector.config import AT_LEAST_1, BACKENDS, config_to_dict, load_config
from detector.imageio import IMAGE_EXTENSIONS, read_image
from detector.pipeline import CPU_WAIT_REPORT, Detector, make_proposer
from detector.warp import SAMPLERS, prepare_image, warp_prepared, warp_region_reference

log = logging.getLogger("benchmark")


def positive_ints(text: str) -> list[int]:
    """``"1,8,16"`` -> ``[1, 8, 16]``; ``""`` -> ``[]`` (the row skipped); anything else is a usage error."""
    try:
        out = [int(t) for t in text.split(",")] if text.strip() else []
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if any(n < 1 for n in out):
        raise argparse.ArgumentTypeError(f"expected numbers >= 1, got {text!r}")
    return out


def default_photo() -> Path:
    """scikit-image's bundled photo (chelsea, 451x300) as a PNG in a temporary folder removed at exit: the
    Selective Search and end-to-end rows time image files, as tools/detect.py reads them."""
    import atexit
    import shutil
    import tempfile

    import skimage.data
    from PIL import Image

    folder = tempfile.mkdtemp(prefix="benchmark_")
    atexit.register(shutil.rmtree, folder, True)
    path = Path(folder) / "chelsea.png"
    Image.fromarray(skimage.data.chelsea()).save(path)
    return path


# the backends an end-to-end row can time: all but bf16, which has none (onnx* with --onnx, mnn with --mnn,
# torch_int8 unless --no-torch-int8)
E2E_BACKENDS = tuple(b for b in BACKENDS if b != "bf16")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", help="photo whose proposals are timed (default: scikit-image's chelsea, 451x300)")
    ap.add_argument("--val-dir", help="more images for the end-to-end, Selective Search and folder timings "
                    "(after --image; sorted by name)")
    ap.add_argument("--config", default=None, help="detector config (default: the dataclass defaults)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--weights", help="BVLC GoogLeNet .npz")
    ap.add_argument("--devkit", help="ILSVRC devkit (meta_det.mat for the embedded default)")
    ap.add_argument("--checkpoint", action="append", default=[], help="trained classifier(s) instead")
    ap.add_argument("--random-boxes", action="store_true",
                    help="time warp/classify on 1,024 seeded random boxes instead of the image's proposals "
                    "(no proposer needed; skips the end-to-end timing)")
    ap.add_argument("--regions", type=number(int, AT_LEAST_1), default=256, help="regions for the batched measurements")
    ap.add_argument("--batch-size", type=number(int, AT_LEAST_1),
                    help="the chosen batch size of every row (default: model.batch_size, "
                    "whose default 0 gives each backend its own: detector.classifier.BEST_BATCH)")
    ap.add_argument("--rounds", type=number(int, AT_LEAST_1), default=4,
                    help="interleaved rounds of batch-1 / batch / naive")
    ap.add_argument("--per-round", type=number(int, AT_LEAST_1), default=16, help="regions per method per round")
    ap.add_argument("--e2e-images", type=number(), default=2, help="images timed end to end (0 = skip)")
    ap.add_argument("--threads", type=number(), default=0,
                    help="torch/cv2 threads (default 0: all cores, as tools/detect.py uses them; on a machine "
                    "where other jobs keep cores busy, give the free cores: more threads than that run several "
                    "times slower, and the end-to-end rows say when the threads waited for a CPU)")
    ap.add_argument("--no-bf16", action="store_true", help="skip the bf16 autocast row")
    ap.add_argument("--onnx", action="store_true",
                    help="add ONNX Runtime fp32 and int8 rows (pip install -e '.[onnx]'; exported on first use)")
    ap.add_argument("--mnn", action="store_true",
                    help="add MNN rows (model.backend=mnn: the ONNX fp32 graph with its inception blocks in MNN; "
                    "pip install -e '.[mnn]')")
    ap.add_argument("--compile", action="store_true", help="add a torch.compile (inductor) row")
    ap.add_argument("--no-torch-int8", action="store_true",
                    help="skip the torch int8 rows (detector/quantized.py; calibrated on first use, ~15 s)")
    ap.add_argument("--batch-sizes", type=positive_ints, default="1,8,16,32,64",
                    help="batch-size sweep of every backend but torch.compile (empty: skip)")
    ap.add_argument("--ss-images", type=number(), default=4, help="images for the Selective Search rows (0 = skip)")
    ap.add_argument("--ensemble", type=number(), default=3, help="members of the end-to-end ensemble row (0 = skip)")
    ap.add_argument("--folder-images", type=number(), default=0,
                    help="images for the folder throughput with vs without overlap (0 = skip)")
    ap.add_argument("--folder-image-workers", type=number(), default=2,
                    help="image workers for the folder row of tools/detect.py --image-workers (0 = skip)")
    ap.add_argument("--memory-regions", type=positive_ints, default="256,2048",
                    help="peak resident memory after classifying each of these numbers of regions (empty: skip)")
    ap.add_argument("--e2e-backends", default="eager,onnx,onnx_int8,torch_int8,mnn",
                    help="backends timed end to end (onnx* only with --onnx, mnn only with --mnn)")
    ap.add_argument("--no-ceiling", action="store_true",
                    help="skip the ceiling rows (each runtime's rate on large convolutions, the floor it implies)")
    ap.add_argument("--command-runs", type=number(), default=0,
                    help="pairs of whole tools/detect.py commands on --image, else the default photo (a fresh process "
                    "each, start-up and model loading included), with and without --no-early-proposals "
                    "(0 = skip, the default)")
    ap.add_argument("--command-backend", default=None,
                    help="model.backend of those commands (default: the config's)")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--plot", help="draw the figures as a PNG here (region classification, end to end by stage, "
                    "the batch sweep, the folder; the issue's targets as dashed lines)")
    ap.add_argument("--from-json", metavar="JSON",
                    help="measure nothing: print the table of a saved --json result (and draw it with --plot)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.e2e_backends.split(",")) - set(E2E_BACKENDS))
    if unknown:
        ap.error(f"--e2e-backends: unknown {', '.join(map(repr, unknown))}; choose from {', '.join(E2E_BACKENDS)}")
    return args


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def random_boxes(image: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` boxes inside the image, sides log-uniform from 20 px to the image size (float32 xyxy)."""
    h, w = image.shape[:2]
    rng = np.random.default_rng(seed)
    bw = np.exp(rng.uniform(np.log(min(20, w)), np.log(w), n))
    bh = np.exp(rng.uniform(np.log(min(20, h)), np.log(h), n))
    x1, y1 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
    return np.stack([x1, y1, x1 + bw, y1 + bh], axis=1).astype(np.float32)


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


class Meter:
    """Accumulated regions and seconds of one method over the interleaved rounds."""

    def __init__(self) -> None:
        self.regions, self.seconds = 0, 0.0

    def rate(self) -> float:
        return _rate(self.regions, self.seconds)


def classify_chunk(ens: Ensemble, img, boxes, warp_cfg, batch_size: int, meter: Meter,
                   backend: str = "eager") -> None:
    """Warp + classify ``boxes`` with the ensemble at ``batch_size`` (what the Detector runs)."""
    ens.batch_size, ens.backend = batch_size, backend
    t0 = time.perf_counter()
    ens.classify_regions(img, boxes, warp_cfg)
    meter.seconds += time.perf_counter() - t0
    meter.regions += len(boxes)


def naive_members(ens: Ensemble) -> list:
    """Plain copies of the members: torch's LRN, default (NCHW) memory format, fp32."""
    return [plain_lrn(copy.deepcopy(m)).to(memory_format=torch.contiguous_format).eval() for m in ens.members]


def naive_chunk(members, pre, image: np.ndarray, boxes, warp_cfg, meter: Meter) -> None:
    """cv2 crop + resize per region (R-CNN's literal crop), one region per eager fp32 forward."""
    t0 = time.perf_counter()
    for box in boxes:
        x = warp_region_reference(image, box, warp_cfg, pre)[None]
        with torch.no_grad():
            sum(m(x) for m in members) / len(members)
    meter.seconds += time.perf_counter() - t0
    meter.regions += len(boxes)


def bench_classification(ens: Ensemble, image, img, boxes, warp_cfg, batch_size: int, rounds: int,
                         per_round: int, bf16: bool, extra: dict[str, Ensemble] | None = None) -> dict:
    """The naive loop, batch 1, the chosen batch (fp32) and, with ``bf16``, the chosen batch under bf16
    autocast, interleaved in ``rounds`` rounds of ``per_round`` regions each, so that all see the same
    machine load (other processes share the CPU)."""
    naive = naive_members(ens)
    backend = ens.backend
    meters = {"naive": Meter(), "batch1": Meter(), "batch": Meter()}
    if bf16:
        meters["batch_bf16"] = Meter()
    for b, be in ((1, "eager"), (batch_size, "eager")) + (((batch_size, "bf16"),) if bf16 else ()):  # warm-up
        classify_chunk(ens, img, boxes[:batch_size], warp_cfg, b, Meter(), be)
    naive_chunk(naive, ens.preprocess, image, boxes[:1], warp_cfg, Meter())
    extra = extra or {}
    for name, e in extra.items():  # ONNX Runtime ensembles (detector/backends.py), warmed up likewise
        meters[name] = Meter()
        for n in (e.batch_size, per_round):  # both shapes the rounds use (torch.compile specialises on shape)
            classify_chunk(e, img, boxes[:n], warp_cfg, e.batch_size, Meter(), e.backend)
    for r in tqdm(range(rounds), desc="interleaved rounds", file=sys.stderr):
        chunk = boxes[(r * per_round) % max(1, len(boxes) - per_round):][:per_round]
        naive_chunk(naive, ens.preprocess, image, chunk, warp_cfg, meters["naive"])
        classify_chunk(ens, img, chunk, warp_cfg, 1, meters["batch1"])
        classify_chunk(ens, img, chunk, warp_cfg, batch_size, meters["batch"])
        if bf16:
            classify_chunk(ens, img, chunk, warp_cfg, batch_size, meters["batch_bf16"], "bf16")
        for name, e in extra.items():
            classify_chunk(e, img, chunk, warp_cfg, e.batch_size, meters[name], e.backend)
    ens.batch_size, ens.backend = batch_size, backend
    out = {k: {"regions": m.regions, "seconds": m.seconds, "regions_per_s": m.rate()} for k, m in meters.items()}
    out["batch"]["batch_size"] = batch_size
    out["speedup_vs_naive"] = meters["batch"].rate() / meters["naive"].rate()
    if bf16:
        out["speedup_bf16_vs_naive"] = meters["batch_bf16"].rate() / meters["naive"].rate()
    for name, e in extra.items():
        out[name]["batch_size"] = e.batch_size
        out[f"speedup_{name}_vs_naive"] = meters[name].rate() / meters["naive"].rate()
    for k, m in meters.items():
        log.info("%-7s %7.1f regions/s (%d regions, %.1f s)", k, m.rate(), m.regions, m.seconds)
    return out


CEILING_ROWS = {"eager": ("batch", "eager (oneDNN) fp32"), "onnx": ("onnx", "ONNX Runtime fp32"),
                "onnx_int8": ("onnx_int8", "ONNX Runtime int8"), "torch_int8": ("torch_int8", "torch int8 (oneDNN)")}


def print_ceiling(res: dict, batch: int) -> None:
    """The ceiling rows: each runtime's rate on chains of large convolutions, the multiply-adds its
    classification row achieved, and the least time the image's regions can take at the ceiling."""
    if "ceiling" not in res:
        return
    gmac = res["ceiling"]["macs_per_region"] / 1e9
    rows, best = res["ceiling"]["conv_rates"], ceilings(res["ceiling"]["conv_rates"])
    c, n = res["classification"], res["num_boxes"]
    for runtime, (key, label) in CEILING_ROWS.items():
        mine = [r for r in rows if r["runtime"] == runtime]
        if not mine or key not in c:
            continue
        shapes = " / ".join(r["shape"] for r in mine)
        rates = " / ".join(f"{r['gmac_per_s']:.0f}" for r in mine)
        print(f"| ceiling: {label} convolutions ({shapes}; batch {mine[0]['batch']}) | {rates} GMAC/s |")
        got = c[key]["regions_per_s"] * gmac
        print(f"| {label} classification row (batch {c[key].get('batch_size', batch)}; {gmac:.2f} GMAC/region) | "
              f"{got:.0f} GMAC/s = {got / best[runtime]:.0%} of the ceiling; {n} regions: "
              f"{n / c[key]['regions_per_s']:.1f} s, at the ceiling {floor_seconds(gmac, n, best[runtime]):.1f} s |")


def _busy_note(rows: list[dict]) -> str:
    """What a row's figures suffered from other processes: the largest share of time the classifier's threads
    waited for a CPU in ``rows`` (``cpu_wait_share``, detector.cpu), from ``CPU_WAIT_REPORT`` (5%); else nothing."""
    waits = [r["cpu_wait_share"] for r in rows if r.get("cpu_wait_share") is not None]
    if not waits or max(waits) < CPU_WAIT_REPORT:
        return ""
    return f" (other processes: its threads waited for a CPU up to {max(waits):.0%} of the time)"


def print_table(res: dict) -> None:
    """The figures as one markdown table (the README pastes it); from the result alone, so that a saved JSON
    prints the same table (``--from-json``)."""
    machine = res.get("cpu") or cpu.describe()  # the CPU the figures were measured on
    print(f"CPU: {cpu.summary(machine)}")
    c, labels = res["classification"], method_labels(res)
    batch = c["batch"].get("batch_size", "?")
    print(f"| measurement ({res.get('image', '?')}, {res.get('threads', '?')} threads) | regions/s |")
    print("|---|---|")
    for name, v in res.get("warp_regions_per_s", {}).items():
        print(f"| warp only, sampler {name}, batch {batch} | {v:.0f} |")
    print(f"| {labels['naive']} | {c['naive']['regions_per_s']:.1f} |")
    if "batch1" in c:
        print(f"| {labels['batch1']} | {c['batch1']['regions_per_s']:.1f} |")
    print(f"| {labels['batch']} | {c['batch']['regions_per_s']:.1f} ({c['speedup_vs_naive']:.2f}x naive) |")
    if "batch_bf16" in c:
        emulated = "" if machine.get("native_bf16", True) else " (no native bf16 on this CPU: emulated)"
        print(f"| {labels['batch_bf16']}{emulated} | "
              f"{c['batch_bf16']['regions_per_s']:.1f} ({c['speedup_bf16_vs_naive']:.2f}x naive) |")
    for be in extra_methods(res):
        print(f"| warp + classify, batch {c[be].get('batch_size', batch)}, {labels[be]} | "
              f"{c[be]['regions_per_s']:.1f} ({c[f'speedup_{be}_vs_naive']:.2f}x naive) |")
    sweep_labels = {"eager": "fp32 channels-last", "bf16": "bf16 autocast", **labels}
    for name, sweep in res.get("batch_sweep", {}).items():
        best = max(sweep, key=sweep.get)
        print(f"| batch sweep, {sweep_labels.get(name, name)}: " + ", ".join(f"{k}: {v:.1f}" for k, v in sweep.items())
              + f" | best batch {best}: {sweep[best]:.1f} |")
    print_ceiling(res, batch)
    for r in res.get("selective_search", []):
        print(f"| Selective Search ({r['boxes_per_image']:.0f} boxes/image), {r['workers']} worker(s), "
              f"{r['images']} images | {r['seconds_per_image']:.2f} s/image |")
    for k, e in res.get("end_to_end", {}).items():
        print(f"| end to end, {k} model(s), {len(e['images'])} image(s), {e['mean_proposals']:.0f} proposals "
              f"| {e['mean_seconds_per_image']:.1f} s/image{_busy_note(e['images'])} |")
    folder = res.get("folder", [])
    for w in (0, 1):
        rows = [f for f in folder if f.get("overlap_workers") == w]
        if rows:
            print(f"| folder of {rows[0]['images']} images, {'overlap (1 worker)' if w else 'one by one'} | "
                  f"{min(r['seconds_per_image'] for r in rows):.2f} s/image (best of {len(rows)}) |")
    rows = [f for f in folder if f.get("image_workers")]
    if rows:
        one = min(f["seconds_per_image"] for f in folder if f.get("overlap_workers") == 0)
        best = min(r["seconds_per_image"] for r in rows)
        print(f"| folder of {rows[0]['images']} images, {rows[0]['image_workers']} image workers (start-up "
              f"included) | {best:.2f} s/image (best of {len(rows)}; {one / best:.2f}x one by one) |")
    c = res.get("detect_command")
    if c:
        for mode, label in (("early", "first image's proposals in a worker while loading (default)"),
                            ("late", "`--no-early-proposals`")):
            rows = c[mode]
            print(f"| `tools/detect.py` command, {c['backend']}, {label}, {len(rows)} runs | "
                  f"{c[f'{mode}_median_wall_s']:.1f} s wall (median; start-up and loading included), "
                  f"{c[f'{mode}_median_image_s']:.1f} s for the image, "
                  f"{c[f'{mode}_median_outside_s']:.2f} s outside its warps and classification{_busy_note(rows)} |")
    for m in res.get("memory", []):
        print(f"| peak RSS after {m['regions']} regions | {m['peak_rss_mb']:.0f} MiB |")
    print()
    for line in recommend(res):
        print(line)


def report(res: dict, args: argparse.Namespace) -> None:
    """Write the JSON where asked (first: nothing measured is lost if a row cannot be printed), print the table,
    draw the chart where asked."""
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1))
        log.info("wrote %s", args.json)
    print_table(res)
    if args.plot:
        log.info("wrote %s", plot_benchmark(res, args.plot))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    if args.from_json:
        try:
            res = load_result(args.from_json)
        except ValueError as e:
            raise UserError(str(e)) from None
        try:
            report(res, args)
        except (KeyError, TypeError, ValueError) as e:  # a hand-edited or foreign file, not a measured result
            raise UserError(f"{args.from_json}: not a complete tools/benchmark.py result "
                            f"({type(e).__name__}: {e})") from None
        return 0
    overrides = list(args.overrides)
    if args.weights:
        overrides.append(f"model.weights={json.dumps(args.weights)}")
    if args.checkpoint:
        overrides.append(f"model.checkpoints={json.dumps(args.checkpoint)}")
    if args.threads > 0:
        overrides.append(f"model.threads={args.threads}")
        import cv2

        cv2.setNumThreads(args.threads)
    cfg = load_config(args.config, overrides)
    log.info("config: %s", json.dumps({k: config_to_dict(getattr(cfg, k)) for k in ("proposals", "warp", "model")}))
    load_start = os.getloadavg()
    log.info("load average at start: %.2f %.2f %.2f (%d CPUs)", *load_start, os.cpu_count() or 0)
    batch = batch_size_for(cfg.model.backend, args.batch_size or cfg.model.batch_size)

    photo = Path(args.image) if args.image else default_photo()
    image, image_name = read_image(photo), photo.stem
    paths = [photo]  # the images of the end-to-end, Selective Search and folder rows
    if args.val_dir:
        exts = {e.lower() for e in IMAGE_EXTENSIONS}
        more = sorted(p for p in Path(args.val_dir).iterdir() if p.suffix.lower() in exts and p not in paths)
        if not more:
            raise UserError(f"--val-dir {args.val_dir}: no images in it ({', '.join(sorted(exts))})")
        paths += more
    ens = build_classifier(cfg.model, cfg.warp, meta_det=args.devkit)
    if args.random_boxes:
        detector, boxes = None, random_boxes(image, 1024)
    else:
        detector = Detector(make_proposer(cfg.proposals), ens, cfg.warp, cfg.detect)
        boxes = detector.propose(image, image_name)
    if len(boxes) == 0:
        raise UserError(f"{image_name}: no proposals to time")
    log.info("%s: %dx%d, %d %s", image_name, image.shape[1], image.shape[0], len(boxes),
             "random boxes" if args.random_boxes else "proposals")
    img = prepare_image(image, ens.preprocess)
    sel = boxes[:args.regions]
    res: dict = {"image": image_name, "image_size": list(image.shape[:2]), "num_boxes": len(boxes),
                 "boxes": "random" if args.random_boxes else "proposals",
                 "threads": torch.get_num_threads(), "load_start": load_start, "cpu": cpu.describe()}
    log.info("CPU: %s", json.dumps(res["cpu"]))
    from detector.backends import int8_weight_bits
    res["int8_weight_bits"] = int8_weight_bits(cfg.model.int8_weight_bits)  # 7 on CPUs without VNNI
    res["warp_regions_per_s"] = bench_warp(img, sel, cfg.warp, batch)
    # the same classifier with its LRNs as torch operators (before the fused kernel), side by side
    extra = {"eager_torch_lrn": Ensemble([copy.deepcopy(m) for m in ens.members], batch_size=batch,
                                         channels_last=ens.channels_last, backend="eager", lrn_kernel=False)}
    # ... and with torch's own convolution and pooling modules, and without Winograd (detector/fast_eager.py)
    if cfg.model.backend == "eager" and ens.eager_kernels:
        extra["eager_modules"] = Ensemble([copy.deepcopy(m) for m in ens.members], batch_size=batch,
                                          channels_last=ens.channels_last, backend="eager", eager_kernels=False)
        if ens.winograd:
            extra["eager_direct"] = Ensemble([copy.deepcopy(m) for m in ens.members], batch_size=batch,
                                             channels_last=ens.channels_last, backend="eager", winograd=False)
    if args.onnx:
        from detector.backends import convert_members, int8_recipe
        recipe = int8_recipe(cfg.model.int8_lrn_sums, cfg.model.int8_calibration, cfg.model.int8_weight_bits)
        for be in ("onnx", "onnx_int8"):
            # the configured LRN mode, and the graph's own LRN operators beside it when that is not already it
            modes = [(cfg.model.onnx_lrn, be)] + ([("graph", f"{be}_graph_lrn")] if cfg.model.onnx_lrn != "graph"
                                                  else [])
            # ONNX fp32 with the conv2 segment in torch (model.winograd) and, beside it, all in ONNX Runtime
            if be == "onnx" and cfg.model.winograd and cfg.model.onnx_lrn == "fused":
                modes.append(("fused", "onnx_no_winograd"))
            for lrn, key in modes:
                wino = cfg.model.winograd and key == be
                extra[key] = Ensemble(convert_members(ens.members, be, cfg.warp, torch.get_num_threads(),
                                                      recipe=recipe, lrn=lrn, winograd=wino),
                                      batch_size=batch_size_for(be, args.batch_size or cfg.model.batch_size),
                                      channels_last=False, backend=be)
        if torch.get_num_threads() > 1:  # how ONNX Runtime scales with threads: what image workers can gain
            extra["onnx_int8_1thread"] = Ensemble(convert_members(ens.members, "onnx_int8", cfg.warp, 1,
                                                                  recipe=recipe, lrn=cfg.model.onnx_lrn),
                                                  batch_size=extra["onnx_int8"].batch_size, channels_last=False,
                                                  backend="onnx_int8")
    if args.mnn:
        from detector.backends import convert_members
        extra["mnn"] = Ensemble(convert_members(ens.members, "mnn", cfg.warp, torch.get_num_threads(),
                                                winograd=cfg.model.winograd),
                                batch_size=batch_size_for("mnn", args.batch_size or cfg.model.batch_size),
                                channels_last=False, backend="mnn")
    if not args.no_torch_int8:
        from detector.quantized import convert_members_int8
        extra["torch_int8"] = Ensemble(convert_members_int8(ens.members, cfg.warp,
                                                            weight_bits=cfg.model.int8_weight_bits),
                                       batch_size=batch_size_for("torch_int8", args.batch_size or cfg.model.batch_size),
                                       channels_last=True, backend="torch_int8")
    # the onnx row's conv2 segment in torch (Winograd) or not: the table's label says which
    res["onnx_conv2_winograd"] = "onnx" in extra and "Winograd" in getattr(extra["onnx"].members[0], "source", "")
    if args.compile:
        try:  # inductor needs a working C++ toolchain; its absence is reported, not fatal
            comp = compiled_ensemble(ens)
            comp.classify_regions(img, boxes[:batch], cfg.warp)
            extra["compile"] = comp
        except Exception as e:  # noqa: BLE001 - any compiler failure
            log.warning("torch.compile is not usable here: %s", str(e).splitlines()[0] if str(e) else e)
            res["compile_error"] = str(e)[:500]
    res["classification"] = bench_classification(ens, image, img, boxes, cfg.warp, batch, args.rounds,
                                                  args.per_round, bf16=not args.no_bf16, extra=extra)
    if not args.no_ceiling:
        res["ceiling"] = {"macs_per_region": count_macs(ens.members[0], cfg.warp.size)["total"],
                          "conv_rates": conv_rates(torch.get_num_threads(), onnx=args.onnx,
                                                   torch_int8=not args.no_torch_int8)}
    ens.batch_size = batch
    if args.batch_sizes:
        # every backend at batch 1 and the sizes after it; torch.compile is left out (it compiles again for
        # every new batch shape, about a minute each) and so is the 1-thread row (the same graph)
        sizes = args.batch_sizes
        sweeps = [("eager", ens, "eager")] + ([] if args.no_bf16 else [("bf16", ens, "bf16")])
        sweeps += [(k, extra[k], extra[k].backend) for k in ("onnx", "onnx_int8", "torch_int8", "mnn")
                   if k in extra]
        res["batch_sweep"] = {}
        for name, e, be in sweeps:
            keep, e.backend = e.backend, be
            res["batch_sweep"][name] = {str(k): v for k, v in bench_batch_sizes(e, img, boxes, cfg.warp, sizes).items()}
            e.backend = keep
    if args.ss_images > 0:
        res["selective_search"] = bench_selective_search(paths[:args.ss_images], cfg.proposals, (1, 2))
    if args.memory_regions:
        res["memory"] = bench_memory(ens, img, cfg.warp, args.memory_regions)
    if args.e2e_images > 0 and detector is not None:
        res["end_to_end"] = {}
        backends = {"eager": ens, **extra}
        for be in args.e2e_backends.split(","):
            if be not in backends:
                log.info("end to end: %s left out (not built in this run: --onnx, --mnn or without "
                         "--no-torch-int8 builds it)", be)
                continue
            variants = [(1, backends[be])] + ([(args.ensemble, replicated_ensemble(backends[be], args.ensemble))]
                                              if args.ensemble > 1 else [])
            for n, e in variants:
                d = Detector(detector.proposer, e, cfg.warp, cfg.detect)
                res["end_to_end"][f"{be} x{n}"] = bench_end_to_end(d, paths[:args.e2e_images], f"{be} x{n}")
    if args.folder_images > 1 and len(paths) == 1:
        log.warning("the folder rows need at least 2 images (--val-dir): left out")
    if args.folder_images > 1 and detector is not None and len(paths) > 1:
        fast = extra.get("torch_int8", extra.get("onnx_int8", ens))  # the fastest int8 backend there is
        d = Detector(detector.proposer, fast, cfg.warp, cfg.detect)
        res["folder"] = []
        for _ in range(2):  # interleaved, so that each way sees the same machine load
            res["folder"] += [bench_folder(d, paths[:args.folder_images], cfg.proposals, w) for w in (0, 1)]
            if args.folder_image_workers > 1:
                res["folder"].append(bench_folder_workers(fast, cfg, paths[:args.folder_images],
                                                          args.folder_image_workers, torch.get_num_threads()))
    res["peak_rss_mb"] = peak_rss_mb()  # of this process: the commands below are processes of their own
    if args.command_runs > 0:
        be = args.command_backend or cfg.model.backend
        cmd_args = [a for o in args.overrides for a in ("--set", o)] + ["--set", f"model.backend={be}"]
        for flag, val in (("--config", args.config), ("--weights", args.weights), ("--devkit", args.devkit)):
            if val:
                cmd_args += [flag, val]
        cmd_args += [a for c in args.checkpoint for a in ("--checkpoint", c)]
        if args.threads > 0:
            cmd_args += ["--threads", str(args.threads)]
        res["detect_command"] = {"backend": be, **bench_detect_command(Path(__file__).with_name("detect.py"),
                                                                       photo, cmd_args,
                                                                       args.command_runs)}
    res["load_end"] = os.getloadavg()
    log.info("load average at end: %.2f %.2f %.2f", *res["load_end"])
    report(res, args)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
