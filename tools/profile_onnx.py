"""Where an exported region classifier spends its time in ONNX Runtime: regions/s and each operator type's
share of kernel time, from ORT's own profiler, on real warped regions.

    python tools/profile_onnx.py GRAPH.onnx [GRAPH2.onnx ...] [--batch 8] [--threads 2] [--rounds 8]
        [--denormals-zero] [--lrn graph|fused] [--top 12] [--json out/profile.json]

GRAPH: a graph from the ONNX cache (``~/.cache/googlenet_rcnn/onnx``: ``<digest>_fp32.onnx`` and
``<digest>_int8_<key>.onnx``, made by ``--set model.backend=onnx`` / ``onnx_int8``). The regions are the int8
calibration set: Selective Search proposals of scikit-image's bundled photos warped as at test time (BVLC
preprocessing, 224x224, context 16). Several graphs are profiled one after another on the same regions.
``--lrn fused`` runs the graphs as ``model.onnx_lrn=fused`` does (segments between GoogLeNet's two LRNs, the
fused kernel timed as ``FusedLRN``); ``graph`` (the default here) runs each graph whole.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from detector.bench import profile_onnx
from detector.cli import UserError, number, run, setup_logging
from detector.config import AT_LEAST_1

log = logging.getLogger("profile_onnx")


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("graphs", nargs="+", type=Path, help="ONNX graphs of the region classifier")
    ap.add_argument("--batch", type=number(int, AT_LEAST_1), default=8, help="regions per run (model.batch_size)")
    ap.add_argument("--threads", type=number(int, AT_LEAST_1), default=2, help="ONNX Runtime intra-op threads")
    ap.add_argument("--rounds", type=number(int, AT_LEAST_1), default=8, help="timed batches after 2 warm-up batches")
    ap.add_argument("--denormals-zero", action="store_true", help="ORT's session.set_denormal_as_zero")
    ap.add_argument("--lrn", choices=["graph", "fused"], default="graph",
                    help="run GoogLeNet's LRNs as the graph's operators or as the fused kernel")
    ap.add_argument("--top", type=number(int, AT_LEAST_1), default=12, help="operator types and nodes listed")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("-v", "--verbose", action="store_true")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    for g in args.graphs:
        if not g.is_file():
            raise UserError(f"{g}: no such ONNX graph")
    from detector.backends import calibration_regions
    from detector.config import WarpConfig
    from detector.weights import BVLC_PREPROCESS

    lrn = None
    if args.lrn == "fused":
        import torch

        from detector.backends import check_lrn_mode, lrn_specs
        from detector.googlenet import GoogLeNet
        check_lrn_mode("fused")
        # the exported member's module path: RegionClassifier.net.norm1 -> nodes /net/norm1/...
        lrn = lrn_specs(torch.nn.ModuleDict({"net": GoogLeNet()}))
    regions = np.concatenate(calibration_regions(BVLC_PREPROCESS, WarpConfig()))
    out = []
    for g in args.graphs:
        r = profile_onnx(g, regions, args.batch, args.threads, args.rounds, args.denormals_zero, lrn)
        out.append(r)
        print(f"{g.name}: {r['regions_per_s']:.1f} regions/s (batch {args.batch}, {args.threads} threads"
              f"{', denormals as zero' if args.denormals_zero else ''}{', LRN fused' if lrn else ''})")
        for k, v in list(r["op_share"].items())[:args.top]:
            print(f"  {k:32s} {100 * v:5.1f}%")
        print("  top nodes:")
        for k, v in list(r["node_share"].items())[:args.top]:
            print(f"  {k:56s} {100 * v:5.1f}%")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
