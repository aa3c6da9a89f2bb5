"""Is Selective Search's box order stable in this environment? Repeated calls on one image, side by side.

    python tools/check_ss_order.py ../shared/data/raccoon/images/raccoon-70.jpg --seconds 30

OpenCV ranks Selective Search boxes with libc's process-wide ``rand()`` stream (seeded right before each
call), so any other thread calling ``rand()`` during a call reorders that call's boxes. ONNX Runtime's
telemetry thread does; ``import detector`` switches it off (``detector/__init__.py``). This tool runs, each in a
fresh interpreter, Selective Search back to back on the image for ``--seconds`` with onnxruntime imported
(a) after ``detector`` (how every tool here runs) and (b) before it with telemetry left on, and prints how
many calls returned a different order than the first call (and whether the set of boxes differed too).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from detector.cli import UserError, number, run
from detector.config import POSITIVE

# Runs in a child interpreter: argv = [mode, image, seconds, json config of SelectiveSearchConfig].
_CHILD = """
import json, sys, time
if sys.argv[1] == "onnxruntime-first":
    import onnxruntime
import detector
import onnxruntime
import numpy as np
from detector.config import SelectiveSearchConfig
from detector.imageio import read_image
from proposals.selective_search import selective_search
img = read_image(sys.argv[2])
cfg = SelectiveSearchConfig(**json.loads(sys.argv[4]))
ref = selective_search(img, cfg)
calls = reordered = other_set = 0
t0 = time.perf_counter()
while time.perf_counter() - t0 < float(sys.argv[3]):
    b = selective_search(img, cfg)
    calls += 1
    if not np.array_equal(b, ref):
        reordered += 1
        other_set += set(map(tuple, b.tolist())) != set(map(tuple, ref.tolist()))
print(json.dumps({"calls": calls, "reordered": reordered, "other_set": other_set, "boxes": len(ref)}))
"""

MODES = {"detector-first": "onnxruntime imported after detector (telemetry off)",
         "onnxruntime-first": "onnxruntime imported first, telemetry on"}


def check(image: Path, seconds: float, mode: str, ss_config: dict) -> dict:
    """Counts from one child interpreter: calls, reordered, other_set (reordered with a different set), boxes."""
    env = dict(os.environ)
    if mode == "onnxruntime-first":
        env.pop("ORT_DISABLE_TELEMETRY", None)
    out = subprocess.run([sys.executable, "-c", _CHILD, mode, str(image), str(seconds), json.dumps(ss_config)],
                         env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{mode} child failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("image", type=Path)
    ap.add_argument("--seconds", type=number(float, POSITIVE), default=30.0,
                    help="per mode; ONNX Runtime's thread first calls rand() ~9 s after import")
    ap.add_argument("--superpixel-scale", type=number(float, POSITIVE), default=2.0)
    args = ap.parse_args(argv)
    if not args.image.is_file():
        raise UserError(f"{args.image}: no such image")
    try:
        import onnxruntime  # noqa: F401 - only to tell the user it is needed
    except ImportError:
        raise UserError("this check needs ONNX Runtime: pip install -e '.[onnx]'") from None
    print(f"{'setting':52s} {'calls':>6s} {'reordered':>10s} {'other set':>10s} {'boxes':>6s}")
    for mode, label in MODES.items():
        r = check(args.image, args.seconds, mode, {"superpixel_scale": args.superpixel_scale})
        print(f"{label:52s} {r['calls']:6d} {r['reordered']:10d} {r['other_set']:10d} {r['boxes']:6d}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
