"""What this machine can do at best: a network's multiply-adds and the runtimes' own convolution rates.

R-CNN's cost is one network forward per region, and GoogLeNet's forward is almost all convolution (the
paper: "1.5 billion multiply-adds at inference time"). :func:`count_macs` counts a module's multiply-adds
per input; :func:`conv_rates` times each runtime the classifier runs on (torch/oneDNN fp32 and int8, ONNX
Runtime fp32 and int8) on chains of large, GEMM-friendly convolutions, which is about the fastest those runtimes
convolve here. Together they give a floor under the time of N regions that no setting of the pipeline can
go below (``tools/benchmark.py`` prints it beside the measured rows; README "Speed").
"""
from __future__ import annotations

import time
from typing import Sequence

import torch
from torch import nn

__all__ = ["count_macs", "conv_rates", "ceilings", "floor_seconds", "CEILING_SHAPES"]

# (name, channels, kernel, spatial size) of the timed chains: ``depth`` convolutions channels -> channels,
# stride 1, "same" padding. The 3x3 one is GoogLeNet's largest kind (conv2, inception_3b); the 1x1 one is
# a plain GEMM of inception_4's size.
CEILING_SHAPES = (("3x3, 192 ch, 28x28", 192, 3, 28), ("1x1, 512 ch, 14x14", 512, 1, 14))


def count_macs(module: nn.Module, size: int, channels: int = 3) -> dict:
    """Multiply-adds of one ``[1, channels, size, size]`` forward of ``module`` (in eval mode), counted by
    forward hooks on its ``nn.Conv2d`` (output elements x input channels per group x kernel area) and
    ``nn.Linear`` layers (output elements x input features); element-wise work (ReLU, LRN, pooling, softmax)
    is not counted, as in the paper's figure. Returns ``{"total": int, "conv": int, "linear": int,
    "layers": {name: int}}``."""
    layers: dict[str, int] = {}
    handles = []

    def hook(name: str):
        def count(mod: nn.Module, inputs, out) -> None:
            out = out[0] if isinstance(out, (tuple, list)) else out
            if isinstance(mod, nn.Conv2d):
                kh, kw = mod.kernel_size
                n = out.numel() * (mod.in_channels // mod.groups) * kh * kw
            else:
                n = out.numel() * mod.in_features
            layers[name] = layers.get(name, 0) + int(n)
        return count

    for name, mod in module.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            handles.append(mod.register_forward_hook(hook(name)))
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros(1, channels, size, size))
    finally:
        module.train(was_training)
        for h in handles:
            h.remove()
    conv = sum(v for k, v in layers.items() if isinstance(module.get_submodule(k), nn.Conv2d))
    return {"total": sum(layers.values()), "conv": conv, "linear": sum(layers.values()) - conv, "layers": layers}


def _chain(channels: int, kernel: int, depth: int, seed: int = 0) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    convs = []
    for _ in range(depth):
        c = nn.Conv2d(channels, channels, kernel, padding=kernel // 2)
        with torch.no_grad():  # weights that keep activations of order 1 through the chain
            c.weight.copy_(torch.randn(c.weight.shape, generator=g) / (channels * kernel * kernel) ** 0.5)
            c.bias.zero_()
        convs += [c, nn.ReLU()]
    # a global pool at the end, as in the classifier: int8 quantisation keeps it and what follows in fp32
    return nn.Sequential(*convs, nn.AdaptiveAvgPool2d(1)).eval()


def _time(run, rounds: int) -> float:
    """Best seconds of ``rounds`` calls after one warm-up call (the best: the ceiling, not the typical)."""
    run()
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
    return best


def _onnx_chains(chain: nn.Sequential, x: torch.Tensor, tmp: str, threads: int) -> dict:
    """ONNX Runtime sessions of ``chain`` with the classifier's session options: fp32 as exported, and int8
    quantised by the classifier's own recipe (:func:`detector.backends.quantize_int8`, calibrated on ``x``)."""
    from pathlib import Path

    import onnxruntime as ort

    from .backends import quantize_int8, session_options

    fp32, int8 = Path(tmp) / "chain.onnx", Path(tmp) / "chain_int8.onnx"
    with torch.no_grad():
        torch.onnx.export(chain, (x,), str(fp32), input_names=["regions"], output_names=["y"], opset_version=17,
                          dynamo=False)
    quantize_int8(fp32, int8, [x.numpy()])
    so = session_options(threads)
    return {k: ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
            for k, p in (("onnx", fp32), ("onnx_int8", int8))}


def conv_rates(threads: int = 2, batch: int = 16, depth: int = 4, rounds: int = 5, onnx: bool = True,
               shapes: Sequence[tuple] = CEILING_SHAPES, torch_int8: bool = True) -> list[dict]:
    """Multiply-adds per second (GMAC/s) of each runtime on chains of ``depth`` convolutions (+ ReLU) of
    each of ``shapes``, batch ``batch``, ``threads`` threads: torch eager fp32 channels-last (oneDNN), with
    ``torch_int8`` the chain quantised by :mod:`detector.quantized` (oneDNN int8), and with ``onnx`` ONNX
    Runtime fp32 and int8 with the classifier's session options. The best of ``rounds``
    timed runs. Returns one dict per (runtime, shape): ``runtime``, ``shape``, ``gmacs`` (of one run),
    ``seconds``, ``gmac_per_s``."""
    import tempfile

    keep = torch.get_num_threads()
    torch.set_num_threads(threads)
    rows = []
    try:
        for name, ch, k, hw in shapes:
            chain = _chain(ch, k, depth)
            x = torch.randn(batch, ch, hw, hw, generator=torch.Generator().manual_seed(1)).relu()
            gmacs = count_macs(chain, hw, channels=ch)["total"] * batch / 1e9
            runs = {}
            xl = x.contiguous(memory_format=torch.channels_last)
            chain_cl = chain.to(memory_format=torch.channels_last)

            def eager() -> None:
                with torch.inference_mode():
                    chain_cl(xl)
            runs["eager"] = eager
            if torch_int8:
                from .quantized import quantize_net
                qchain, _ = quantize_net(chain, [x.numpy()])

                def quantized(q=qchain) -> None:
                    with torch.inference_mode():
                        q(xl)
                runs["torch_int8"] = quantized
            if onnx:
                with tempfile.TemporaryDirectory() as tmp:
                    sessions = _onnx_chains(chain, x, tmp, threads)
                xn = x.numpy()
                for key, sess in sessions.items():
                    runs[key] = lambda s=sess: s.run(None, {"regions": xn})
            for runtime, run in runs.items():
                secs = _time(run, rounds)
                rows.append({"runtime": runtime, "shape": name, "batch": batch, "depth": depth, "threads": threads,
                             "gmacs": gmacs, "seconds": secs, "gmac_per_s": gmacs / secs})
    finally:
        torch.set_num_threads(keep)
    return rows


def floor_seconds(gmacs_per_region: float, regions: int, gmac_per_s: float) -> float:
    """The least time ``regions`` forwards of ``gmacs_per_region`` can take at ``gmac_per_s``."""
    return gmacs_per_region * regions / gmac_per_s if gmac_per_s > 0 else float("inf")


def ceilings(rows: Sequence[dict]) -> dict[str, float]:
    """The best GMAC/s per runtime over the timed shapes."""
    best: dict[str, float] = {}
    for r in rows:
        best[r["runtime"]] = max(best.get(r["runtime"], 0.0), r["gmac_per_s"])
    return best
