"""Forward speed of the BVLC GoogLeNet alone (eager fp32, 224x224) on this machine.

    nice -n 10 python tools/benchmark_googlenet.py [--weights W.npz] [--batch-sizes 1 32] [--threads 2]
        [--seconds 20] [--channels-last] [--json out/googlenet_bench.json]

Reports parameter count, images/s per batch size (median of timed repetitions after warm-up) and the
machine load (``os.getloadavg``) at start and end, since other processes share the CPU.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from detector.cli import number, run, setup_logging
from detector.config import AT_LEAST_1, POSITIVE
from detector.googlenet import GoogLeNet

log = logging.getLogger("benchmark_googlenet")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", help="BVLC .npz (optional: speed does not depend on the values)")
    ap.add_argument("--batch-sizes", type=number(int, AT_LEAST_1), nargs="+", default=[1, 32])
    ap.add_argument("--threads", type=number(), default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--seconds", type=number(float, POSITIVE), default=20.0,
                    help="timed seconds per batch size (approx.)")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    setup_logging(args.verbose)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    log.info("config: %s; torch %s, %d threads, load %s", vars(args), torch.__version__,
             torch.get_num_threads(), os.getloadavg())
    net = GoogLeNet().eval()
    if args.weights:
        from detector.weights import load_bvlc_weights

        load_bvlc_weights(net, args.weights)  # logs the sha256
    params = sum(p.numel() for p in net.parameters())
    log.info("parameters: %d", params)
    if args.channels_last:
        net = net.to(memory_format=torch.channels_last)
    result = {"parameters": params, "threads": torch.get_num_threads(), "channels_last": args.channels_last,
              "load_start": os.getloadavg(), "images_per_s": {}}
    with torch.inference_mode():
        for bs in args.batch_sizes:
            x = torch.randn(bs, 3, 224, 224)
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            net(x)  # warm-up
            rates, t_end = [], time.perf_counter() + args.seconds
            while time.perf_counter() < t_end or len(rates) < 3:
                t0 = time.perf_counter()
                net(x)
                rates.append(bs / (time.perf_counter() - t0))
            med = statistics.median(rates)
            result["images_per_s"][bs] = {"median": med, "min": min(rates), "max": max(rates),
                                          "repetitions": len(rates)}
            log.info("batch %d: %.1f images/s (median of %d; min %.1f, max %.1f)", bs, med, len(rates),
                     min(rates), max(rates))
    result["load_end"] = os.getloadavg()
    log.info("load at end: %s", result["load_end"])
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    print(json.dumps(result["images_per_s"]))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
