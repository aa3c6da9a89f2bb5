"""Reading a ``tools/benchmark.py`` result (the dict it writes as JSON): the methods' names, the figures each
chart shows, and a PNG of them.

The table stays in ``tools/benchmark.py`` (it prints what the README pastes); this module holds what the table
and the chart share (:func:`method_labels`) and the chart itself, so that a saved JSON can be drawn again
without measuring anything (``tools/benchmark.py --from-json``).
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np

__all__ = ["BASE_ROWS", "TARGETS", "ROW_BACKENDS", "load_result", "method_labels", "extra_methods", "chart_data",
           "recommend", "plot_benchmark"]

# the classification rows every run has (tools/benchmark.py bench_classification); all others are extra methods
BASE_ROWS = ("naive", "batch1", "batch", "batch_bf16")

# issue 7's targets, drawn as lines: region classification against the naive baseline, and one model's
# tools/detect.py seconds per image on a 500x375 photo; a folder's throughput against one by one
TARGETS = {"fp32_vs_naive": 2.0, "int8_vs_naive": 5.0, "fp32_s_per_image": 20.0, "int8_s_per_image": 6.0,
           "folder_speedup": 1.3}

_EXTRA_LABELS = {"onnx": "ONNX Runtime fp32", "onnx_int8": "ONNX Runtime int8", "compile": "torch.compile fp32",
                 "onnx_int8_1thread": "ONNX Runtime int8, 1 thread",
                 "eager_torch_lrn": "fp32 channels-last, LRN as torch operators",
                 "eager_modules": "fp32 channels-last, torch's convolution and pooling modules",
                 "eager_direct": "fp32 channels-last, fused convolutions without Winograd",
                 "onnx_no_winograd": "ONNX Runtime fp32, conv2 in ONNX Runtime too (no Winograd)",
                 "onnx_graph_lrn": "ONNX Runtime fp32, LRN as graph operators",
                 "onnx_int8_graph_lrn": "ONNX Runtime int8, LRN as graph operators",
                 "torch_int8": "torch int8 (oneDNN, fused uint8 LRN)",
                 "mnn": "MNN fp32 (inception blocks in MNN; conv1 ONNX Runtime, conv2 torch Winograd)"}
_INT8 = ("onnx_int8", "onnx_int8_1thread", "onnx_int8_graph_lrn", "torch_int8")

# the classification rows that are a backend as configured (``--set model.backend=...``, at its own batch and
# the run's threads); the other rows are variants kept for comparison
ROW_BACKENDS = {"batch": "eager", "batch_bf16": "bf16", "onnx": "onnx", "onnx_int8": "onnx_int8",
                "torch_int8": "torch_int8", "mnn": "mnn"}


def load_result(path: str | Path) -> dict:
    """A benchmark JSON, checked for what the table and the chart need; a clear ``ValueError`` otherwise."""
    p = Path(path)
    try:
        res = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:  # e.g. a truncated write, or an image given by mistake
        raise ValueError(f"{p}: not JSON ({e})") from None
    c = res.get("classification") if isinstance(res, dict) else None
    missing = [k for k in ("naive", "batch") if not isinstance(c, dict) or not isinstance(c.get(k), dict)]
    if missing:
        raise ValueError(f"{p}: not a tools/benchmark.py result (no classification rows {', '.join(missing)})")
    return res


def extra_methods(res: dict) -> list[str]:
    """The classification rows beyond :data:`BASE_ROWS`, in the order they were measured."""
    return [k for k, v in res["classification"].items() if isinstance(v, dict) and k not in BASE_ROWS]


def method_labels(res: dict) -> dict[str, str]:
    """Each classification row's name as the table prints it, e.g. ``"torch int8 (oneDNN, fused uint8 LRN),
    7-bit weights"``; the base rows name their batch size."""
    batch = res["classification"]["batch"].get("batch_size", "?")
    labels = {"naive": "naive: cv2 crop+resize, 1 region per eager fp32 forward",
              "batch1": "warp + classify, batch 1, fp32 channels-last",
              "batch": f"warp + classify, batch {batch}, fp32 channels-last",
              "batch_bf16": f"warp + classify, batch {batch}, bf16 autocast channels-last", **_EXTRA_LABELS}
    if res.get("int8_weight_bits"):
        for k in _INT8:
            labels[k] += f", {res['int8_weight_bits']}-bit weights"
    if res.get("onnx_conv2_winograd"):
        labels["onnx"] += ", conv2 in torch (Winograd)"
    return {k: labels.get(k, k) for k in (*BASE_ROWS, *extra_methods(res)) if k in res["classification"]}


def recommend(res: dict, close: float = 0.05) -> list[str]:
    """Which backend to choose on the machine the result was measured on: the fastest fp32 one and, when faster,
    the fastest int8 one, by the interleaved classification rates of the rows of :data:`ROW_BACKENDS` the run
    measured. A runner-up within ``close`` (5%) of the fastest is named too: rounds differ by that much."""
    c = res["classification"]
    ranked = {kind: sorted(((c[k]["regions_per_s"], b) for k, b in ROW_BACKENDS.items()
                            if k in c and _precision(k) == kind), reverse=True) for kind in ("fp32", "int8")}
    lines = []
    for kind, rows in ranked.items():
        if not rows:
            continue
        rate, backend = rows[0]
        if kind == "int8" and ranked["fp32"] and rate <= ranked["fp32"][0][0]:
            lines.append(f"int8 is not faster than fp32 on this machine ({backend}: {rate:.1f} regions/s)")
            continue
        near = "".join(f"; {b} within {close:.0%}: {r:.1f}" for r, b in rows[1:] if r >= (1 - close) * rate)
        note = " (its detection mAP against fp32: README \"Speed\")" if kind == "int8" else ""
        lines.append(f"fastest {kind} here: --set model.backend={backend} ({rate:.1f} regions/s, "
                     f"{rate / c['naive']['regions_per_s']:.2f}x naive{near}){note}")
    return lines


def _precision(key: str) -> str:
    return "naive" if key == "naive" else "int8" if key in _INT8 else "bf16" if "bf16" in key else "fp32"


def chart_data(res: dict) -> dict:
    """The figures the chart draws, each panel a list of rows (absent when the run did not measure it):

    - ``classification``: ``(key, regions/s, x naive, "naive"|"fp32"|"int8"|"bf16")`` per row, fastest first;
      ``targets``: the regions/s the fp32 and int8 targets ask for (2x and 5x the naive rate);
    - ``end_to_end``: ``(label, proposals s, warp s, classify s, other s, "fp32"|"int8"|"bf16")``, means over
      the run's images (``other``: NMS and top-k); the ``tools/detect.py`` command rows as ``(label, 0, 0, warps
      + classification s, everything else s, precision)``, medians, the proposals inside "everything else";
    - ``batch_sweep``: ``{method: ([batch sizes], [regions/s])}``;
    - ``folder``: ``(label, best s/image)``, with ``folder_target``: one by one's time / 1.3, and
      ``folder_backend``: the classifier's backend.
    """
    c = res["classification"]
    naive = c["naive"]["regions_per_s"]
    rows = [(k, c[k]["regions_per_s"], c[k]["regions_per_s"] / naive, _precision(k))
            for k in (*BASE_ROWS, *extra_methods(res)) if k in c]
    out: dict = {"classification": sorted(rows, key=lambda r: -r[1]),
                 "targets": {"fp32": TARGETS["fp32_vs_naive"] * naive, "int8": TARGETS["int8_vs_naive"] * naive}}
    e2e = []
    for k, e in res.get("end_to_end", {}).items():
        im = e.get("images") or []
        if im:
            mean = {s: float(np.mean([r[s] for r in im])) for s in ("proposals_s", "warp_s", "classify_s")}
            other = float(np.mean([r["seconds"] for r in im])) - sum(mean.values())
            e2e.append((k, mean["proposals_s"], mean["warp_s"], mean["classify_s"], max(0.0, other),
                        _precision(k.split()[0])))
    cmd = res.get("detect_command")
    if cmd:
        for mode, label in (("early", "detect.py command"), ("late", "detect.py --no-early-proposals")):
            if f"{mode}_median_wall_s" in cmd:
                inside = float(np.median([r["warp_s"] + r["classify_s"] for r in cmd[mode]]))
                e2e.append((f"{label} ({cmd['backend']})", 0.0, 0.0, inside,
                            max(0.0, cmd[f"{mode}_median_wall_s"] - inside), _precision(cmd["backend"])))
    if e2e:
        out["end_to_end"] = e2e
    if res.get("batch_sweep"):
        out["batch_sweep"] = {name: ([int(b) for b in s], [float(v) for v in s.values()])
                              for name, s in res["batch_sweep"].items()}
    folder = res.get("folder") or []
    fold = []
    for label, pick in (("one by one", lambda f: f.get("overlap_workers") == 0),
                        ("Selective Search overlap (1 worker)", lambda f: f.get("overlap_workers") == 1),
                        ("image workers", lambda f: bool(f.get("image_workers")))):
        mine = [f for f in folder if pick(f)]
        if mine:
            n = mine[0].get("image_workers")
            fold.append((f"{n} {label}" if n else label, min(f["seconds_per_image"] for f in mine)))
    if fold:
        out["folder"], out["folder_backend"] = fold, folder[0].get("backend", "backend not recorded")
        if fold[0][0] == "one by one":
            out["folder_target"] = fold[0][1] / TARGETS["folder_speedup"]
    return out


_COLOURS = {"naive": "0.55", "fp32": "tab:blue", "int8": "tab:orange", "bf16": "tab:purple"}


def plot_benchmark(res: dict, path: str | Path) -> Path:
    """Write a PNG of :func:`chart_data`: one panel per part the run measured (region classification,
    end-to-end seconds per image by stage, the batch sweep, the folder), issue 7's targets as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    data, labels = chart_data(res), method_labels(res)
    panels = [p for p in ("classification", "end_to_end", "batch_sweep", "folder") if p in data]
    heights = {"classification": 0.42 * len(data["classification"]) + 1.2,
               "end_to_end": 0.42 * len(data.get("end_to_end", ())) + 1.4, "batch_sweep": 3.6,
               "folder": 0.5 * len(data.get("folder", ())) + 1.4}
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, sum(heights[p] for p in panels)),
                             gridspec_kw={"height_ratios": [heights[p] for p in panels]}, squeeze=False)
    cpu = res.get("cpu") or {}
    where = f"{res.get('image', '?')}, {res.get('num_boxes', '?')} proposals, {res.get('threads', '?')} threads"
    fig.suptitle(f"tools/benchmark.py: {where}" + (f"; {cpu['model']}" if cpu.get("model") else ""), fontsize=10)
    for ax, panel in zip(axes[:, 0], panels):
        if panel == "classification":
            rows = data["classification"][::-1]  # fastest on top
            y = np.arange(len(rows))
            ax.barh(y, [r[1] for r in rows], color=[_COLOURS[r[3]] for r in rows])
            ax.set_yticks(y, [textwrap.fill(labels.get(r[0], r[0]), 48) for r in rows], fontsize=7)
            for yi, r in zip(y, rows):
                ax.text(r[1], yi, f" {r[1]:.1f} ({r[2]:.2f}x)", va="center", fontsize=7)
            for kind, style in (("fp32", "--"), ("int8", ":")):
                if kind not in {r[3] for r in rows}:
                    continue  # no row of that precision: its target would only clutter
                ax.axvline(data["targets"][kind], color=_COLOURS[kind], ls=style,
                           label=f"{kind} target: {TARGETS[f'{kind}_vs_naive']:.0f}x naive")
            ax.set_xlabel("regions/s (warp + classify; in parentheses: x the naive baseline)")
            ax.set_title("Region classification, interleaved rounds", fontsize=9)
            ax.set_xlim(0, max(r[1] for r in rows) * 1.25)
        elif panel == "end_to_end":
            rows = data["end_to_end"][::-1]
            y = np.arange(len(rows))
            left = np.zeros(len(rows))
            for i, (stage, colour) in enumerate((("proposals", "tab:green"), ("warp", "tab:olive"),
                                                 ("classify", "tab:blue"), ("other", "0.7"))):
                w = np.array([r[i + 1] for r in rows])
                ax.barh(y, w, left=left, color=colour, label=stage)
                left += w
            ax.set_yticks(y, [r[0] for r in rows], fontsize=7)
            for yi, total in zip(y, left):
                ax.text(total, yi, f" {total:.1f} s", va="center", fontsize=7)
            for kind, style in (("fp32", "--"), ("int8", ":")):
                if kind not in {r[5] for r in rows}:
                    continue
                ax.axvline(TARGETS[f"{kind}_s_per_image"], color=_COLOURS[kind], ls=style,
                           label=f"{kind} target, one model: {TARGETS[f'{kind}_s_per_image']:.0f} s")
            ax.set_xlabel("seconds per image (command rows: warps + classification, then start-up and the rest)")
            ax.set_title("End to end, one image (mean; commands: median)", fontsize=9)
            ax.set_xlim(0, max(left.max(), TARGETS["fp32_s_per_image"]) * 1.15)
        elif panel == "batch_sweep":
            for name, (sizes, rates) in data["batch_sweep"].items():
                ax.plot(sizes, rates, "o-", label=name)
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted({b for s, _ in data["batch_sweep"].values() for b in s}))
            ax.get_xaxis().set_major_formatter(ScalarFormatter())
            ax.set_xlabel("batch size")
            ax.set_ylabel("regions/s")
            ax.set_title("Batch sweep", fontsize=9)
        else:
            rows = data["folder"][::-1]
            y = np.arange(len(rows))
            ax.barh(y, [r[1] for r in rows], color="tab:orange")
            ax.set_yticks(y, [r[0] for r in rows], fontsize=7)
            for yi, r in zip(y, rows):
                ax.text(r[1], yi, f" {r[1]:.2f} s", va="center", fontsize=7)
            if "folder_target" in data:
                ax.axvline(data["folder_target"], color="k", ls="--",
                           label=f"target: {TARGETS['folder_speedup']}x one by one")
            ax.set_xlabel(f"seconds per image over the folder (best of the rounds; {data['folder_backend']})")
            ax.set_title("A folder of images", fontsize=9)
            ax.set_xlim(0, max(r[1] for r in rows) * 1.2)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the panel, never on a bar
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))  # room for the title above the panels
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=100)
    plt.close(fig)
    return p
