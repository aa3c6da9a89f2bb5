"""Multiply-add counts against hand-computed answers and the paper's figure; the ceiling rows' bookkeeping."""
import math

import pytest
import torch
from torch import nn

from detector.ceiling import ceilings, conv_rates, count_macs, floor_seconds
from detector.googlenet import GoogLeNet


def test_count_macs_by_hand():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 1, groups=2), nn.Flatten(),
                        nn.Linear(8 * 8 * 8, 10))
    m = count_macs(net, 8)
    # conv 3->4 3x3 on 8x8: 4*8*8 outputs x 3*9; grouped 1x1 4->8 (2 groups): 8*8*8 outputs x 2; fc 10 x 512
    assert m["layers"] == {"0": 256 * 27, "2": 512 * 2, "4": 10 * 512}
    assert (m["conv"], m["linear"], m["total"]) == (6912 + 1024, 5120, 6912 + 1024 + 5120)
    assert net.training  # the mode is given back


def test_googlenet_is_the_papers_1_5_billion_multiply_adds():
    # "Going Deeper with Convolutions", section 1: "a computational budget of 1.5 billion multiply-adds at
    # inference time"; Table 1's ops column sums to about the same
    m = count_macs(GoogLeNet(num_classes=1000), 224)
    assert 1.45e9 < m["total"] < 1.6e9
    assert m["linear"] == 1024 * 1000
    assert m["layers"]["conv1"] == 112 * 112 * 64 * 3 * 49  # 7x7/2 on 224x224
    assert m["layers"]["conv2"] == 56 * 56 * 192 * 64 * 9  # after conv1's stride 2 and pool1's


def test_ceilings_and_floor():
    rows = [{"runtime": "eager", "gmac_per_s": 50.0}, {"runtime": "eager", "gmac_per_s": 80.0},
            {"runtime": "onnx_int8", "gmac_per_s": 300.0}]
    assert ceilings(rows) == {"eager": 80.0, "onnx_int8": 300.0}
    assert floor_seconds(1.5, 1000, 300.0) == pytest.approx(5.0)
    assert math.isinf(floor_seconds(1.5, 10, 0.0))


def test_conv_rates_time_the_counted_work():
    pytest.importorskip("onnxruntime")
    threads = torch.get_num_threads()
    rows = conv_rates(threads=1, batch=2, depth=2, rounds=1, shapes=[("tiny", 8, 3, 6)])
    assert sorted(r["runtime"] for r in rows) == ["eager", "onnx", "onnx_int8", "torch_int8"]
    for r in rows:  # two 3x3 convolutions 8->8 on 6x6, batch 2
        assert r["gmacs"] == pytest.approx(2 * 2 * 6 * 6 * 8 * 8 * 9 / 1e9)
        assert r["seconds"] > 0 and r["gmac_per_s"] == pytest.approx(r["gmacs"] / r["seconds"])
    assert torch.get_num_threads() == threads  # given back


def test_benchmark_prints_the_floor_from_the_ceiling(capsys):
    from conftest import load_tool

    tool = load_tool("benchmark")
    res = {"num_boxes": 1000,
           "classification": {"batch": {"regions_per_s": 50.0}, "onnx_int8": {"regions_per_s": 150.0,
                                                                                "batch_size": 16}},
           "ceiling": {"macs_per_region": 1.5e9, "conv_rates": [
               {"runtime": "eager", "shape": "a", "batch": 16, "gmac_per_s": 100.0},
               {"runtime": "eager", "shape": "b", "batch": 16, "gmac_per_s": 75.0},
               {"runtime": "onnx_int8", "shape": "a", "batch": 16, "gmac_per_s": 450.0}]}}
    tool.print_ceiling(res, 8)
    out = capsys.readouterr().out.splitlines()
    # eager: 50 regions/s x 1.5 GMAC = 75 GMAC/s of the best 100; 1000 regions in 20 s, at 100 GMAC/s 15 s
    assert out[0].endswith("| 100 / 75 GMAC/s |")
    assert "(batch 8; 1.50 GMAC/region) | 75 GMAC/s = 75% of the ceiling; 1000 regions: 20.0 s, at the ceiling " \
           "15.0 s |" in out[1]
    # int8 at batch 16: 225 of 450 GMAC/s; 6.7 s, at the ceiling 1000 x 1.5 / 450 = 3.3 s; no ONNX fp32 rows
    assert "(batch 16; 1.50 GMAC/region) | 225 GMAC/s = 50% of the ceiling; 1000 regions: 6.7 s, at the " \
           "ceiling 3.3 s |" in out[3]
    assert len(out) == 4


def test_conv_rates_without_onnx_runtime_time_torch_only():
    rows = conv_rates(threads=1, batch=1, depth=1, rounds=1, onnx=False, shapes=[("tiny 1x1", 4, 1, 5)])
    assert [r["runtime"] for r in rows] == ["eager", "torch_int8"]  # torch's own int8: no ONNX Runtime needed
    assert rows[0]["gmacs"] == rows[1]["gmacs"] == pytest.approx(5 * 5 * 4 * 4 / 1e9)
    rows = conv_rates(threads=1, batch=1, depth=1, rounds=1, onnx=False, shapes=[("tiny 1x1", 4, 1, 5)],
                      torch_int8=False)
    assert [r["runtime"] for r in rows] == ["eager"]


def test_benchmark_table_names_the_cpu_and_what_it_lacks(capsys):
    """The figures depend on the CPU: the table starts with it, says when bf16 is emulated, and gives the int8
    weight width the recipe chose for it."""
    from conftest import load_tool

    tool = load_tool("benchmark")
    rate = {"regions_per_s": 10.0}
    res = {"warp_regions_per_s": {}, "int8_weight_bits": 7,
           "cpu": {"model": "AMD EPYC", "cpus": 2, "flags": ["avx2", "fma"], "vnni": False, "native_bf16": False},
           "classification": {"naive": rate, "batch1": rate, "batch": rate, "speedup_vs_naive": 1.0,
                              "batch_bf16": rate, "speedup_bf16_vs_naive": 1.0,
                              "torch_int8": {"regions_per_s": 20.0, "batch_size": 16}, "speedup_torch_int8_vs_naive": 2.0}}
    tool.print_table(res)
    out = capsys.readouterr().out
    assert out.startswith("CPU: AMD EPYC, 2 CPUs, flags avx2, fma\n")
    assert "bf16 autocast channels-last (no native bf16 on this CPU: emulated) | 10.0 (1.00x naive) |" in out
    assert "| warp + classify, batch 16, torch int8 (oneDNN, fused uint8 LRN), 7-bit weights | 20.0 (2.00x naive) |" in out
    res["cpu"] = {**res["cpu"], "native_bf16": True}
    tool.print_table(res)
    assert "emulated" not in capsys.readouterr().out


def test_benchmark_end_to_end_row_says_when_other_processes_slowed_it(capsys):
    """An end-to-end row whose classification waited for a CPU (detector.cpu) says so, with the worst image's
    share; a row measured on free cores (or where Linux's schedstat is missing) is printed plain."""
    from conftest import load_tool

    tool = load_tool("benchmark")
    res = {"warp_regions_per_s": {}, "cpu": {"model": "AMD EPYC", "cpus": 2, "flags": ["avx2"], "vnni": False,
                                             "native_bf16": False},
           "classification": {"naive": {"regions_per_s": 14.0}, "batch1": {"regions_per_s": 30.0},
                              "batch": {"regions_per_s": 45.0}, "speedup_vs_naive": 45.0 / 14.0},
           "end_to_end": {"mnn x1": {"images": [{"cpu_wait_share": 0.02}, {"cpu_wait_share": 0.49}],
                                     "mean_proposals": 1127.0, "mean_seconds_per_image": 40.25},
                          "mnn x3": {"images": [{"cpu_wait_share": 0.03}, {"cpu_wait_share": None}],
                                     "mean_proposals": 1127.0, "mean_seconds_per_image": 55.0}}}
    tool.print_table(res)
    out = capsys.readouterr().out
    assert ("| end to end, mnn x1 model(s), 2 image(s), 1127 proposals | 40.2 s/image (other processes: its threads "
            "waited for a CPU up to 49% of the time) |") in out
    assert "| end to end, mnn x3 model(s), 2 image(s), 1127 proposals | 55.0 s/image |" in out
    # the whole-command rows read the share from each run's log line (detector.bench.parse_detect_log)
    del res["end_to_end"]
    run = {"wall_s": 22.0, "warp_s": 0.3, "classify_s": 18.0, "in_worker": True, "proposals_s": 1.0}
    res["detect_command"] = {"backend": "mnn",
                             "early": [{**run, "cpu_wait_share": 0.0}, {**run, "cpu_wait_share": 0.2}],
                             "late": [{**run, "cpu_wait_share": 0.0}], "early_median_wall_s": 22.0,
                             "early_median_image_s": 18.3, "early_median_outside_s": 3.7, "late_median_wall_s": 22.0,
                             "late_median_image_s": 18.3, "late_median_outside_s": 3.7}
    tool.print_table(res)
    rows = [line for line in capsys.readouterr().out.splitlines() if "command" in line]
    assert rows[0].endswith("3.70 s outside its warps and classification (other processes: its threads waited for a "
                            "CPU up to 20% of the time) |")
    assert rows[1].endswith("3.70 s outside its warps and classification |")
