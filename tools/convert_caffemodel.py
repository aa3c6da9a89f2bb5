"""Convert a Caffe ``.caffemodel`` (e.g. BVLC's bvlc_googlenet.caffemodel) to the project's ``.npz``.

    python tools/convert_caffemodel.py bvlc_googlenet.caffemodel ~/.cache/googlenet_rcnn/bvlc_googlenet.npz

The model zoo file: http://dl.caffe.berkeleyvision.org/bvlc_googlenet.caffemodel . The output has the keys
and shapes of the shared ``bvlc_googlenet.npz`` (``<caffe layer>/weight|bias``); it is checked by loading
it strictly into :class:`detector.googlenet.GoogLeNet` unless ``--no-check``.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import numpy as np

from detector.caffemodel import CaffeModelError, caffemodel_to_arrays, read_caffemodel
from detector.cli import UserError, run, setup_logging

log = logging.getLogger("convert_caffemodel")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("caffemodel", help="input binary .caffemodel")
    ap.add_argument("out", help="output .npz")
    ap.add_argument("--keep-aux", action="store_true",
                    help="also write the auxiliary classifiers loss1/* loss2/* (train-time models)")
    ap.add_argument("--no-check", action="store_true",
                    help="do not check the result by loading it into the BVLC GoogLeNet")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    setup_logging(args.verbose)
    log.info("converting %s -> %s (keep_aux=%s, check=%s)", args.caffemodel, args.out, args.keep_aux,
             not args.no_check)
    try:
        layers = read_caffemodel(args.caffemodel)
        arrays = caffemodel_to_arrays(layers, keep_aux=args.keep_aux)
    except CaffeModelError as e:
        raise UserError(str(e)) from None
    log.info("%d layers, %d with weights -> %d arrays, %d values", len(layers),
             sum(1 for layer in layers if layer.blobs), len(arrays), sum(a.size for a in arrays.values()))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, out)
    if not args.no_check:
        from detector.googlenet import GoogLeNet
        from detector.weights import load_bvlc_weights

        aux = any(k.startswith(("loss1/", "loss2/")) for k in arrays)
        sha = load_bvlc_weights(GoogLeNet(aux_logits=aux), out)  # raises naming what does not fit
        log.info("checked: loads strictly into the BVLC GoogLeNet")
    else:
        from detector.weights import sha256_file

        sha = sha256_file(out)
    log.info("wrote %s (sha256 %s)", out, sha)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
