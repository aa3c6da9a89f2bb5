"""tools/detect.py end to end: odd image formats, unreadable files (one error line, non-zero exit, the
other images still processed), pictures and JSON written. A tiny colour classifier stands in for
GoogLeNet (substituted in detector.classifier, which the tool imports it from) so the test is fast;
whole-image proposals, except where Selective Search's worker is the subject."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from detector.classifier import Ensemble, RegionClassifier

REPO = Path(__file__).resolve().parents[1]
IDENTITY = SimpleNamespace(channel_order="RGB", scale=255.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class BrightNet(nn.Module):
    """Logits [0, mean brightness / 20]: bright regions score high for class 'bright'."""

    def forward(self, x):
        return torch.stack([torch.zeros(len(x)), x.mean(dim=(1, 2, 3)) / 20], dim=1)


@pytest.fixture()
def tool(monkeypatch):
    mod = load_tool("detect")
    ens = Ensemble([RegionClassifier(BrightNet(), ("n0001",), ("bright thing",), IDENTITY)],
                   batch_size=4, channels_last=False)
    import detector.classifier  # where main() imports it from, after starting the first image's proposals

    monkeypatch.setattr(detector.classifier, "build_classifier", lambda *a, **k: ens)
    return mod


def write_inputs(d: Path) -> dict[str, Path]:
    rgb = np.full((40, 60, 3), 220, np.uint8)
    files = {
        "rgb": d / "rgb.jpg",
        "gray": d / "gray.png",
        "cmyk": d / "cmyk.jpg",
        "alpha": d / "alpha.png",
        "deep": d / "deep16.png",
        "broken": d / "broken.jpg",
    }
    Image.fromarray(rgb).save(files["rgb"])
    Image.fromarray(np.full((30, 50), 200, np.uint8), mode="L").save(files["gray"])
    Image.fromarray(rgb).convert("CMYK").save(files["cmyk"])
    rgba = np.dstack([rgb, np.full((40, 60), 128, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(files["alpha"])
    Image.fromarray(np.full((20, 30), 50000, np.uint16)).save(files["deep"])  # 16-bit grey
    files["broken"].write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    return files


def test_formats_errors_outputs(tool, tmp_path, capsys):
    files = write_inputs(tmp_path)
    out = tmp_path / "pics"
    argv = [str(files[k]) for k in ("rgb", "broken", "gray", "cmyk", "alpha", "deep")]
    argv += [str(tmp_path / "missing.jpg"), "--whole-image", "--out", str(out), "--score-threshold", "0.5",
             "--json", str(tmp_path / "dets.json")]
    rc = tool.main(argv)
    cap = capsys.readouterr()
    assert rc == 1  # two bad files -> non-zero exit, after the others were processed
    errors = [l for l in cap.err.splitlines() if l.startswith("error:")]
    assert len(errors) == 2
    assert "broken.jpg" in errors[0] and "missing.jpg" in errors[1]
    lines = [l.split("\t") for l in cap.out.splitlines()]
    assert sorted(Path(l[0]).stem for l in lines) == ["alpha", "cmyk", "deep16", "gray", "rgb"]
    for path, name, score, box in lines:
        assert name == "bright thing" and float(score) > 0.5
        size = Image.open(path).size
        assert [float(v) for v in box.split()] == [0.0, 0.0, float(size[0]), float(size[1])]
    assert sorted(p.name for p in out.iterdir()) == ["alpha.png", "cmyk.jpg", "deep16.png", "gray.png", "rgb.jpg"]
    assert Image.open(out / "gray.png").size == (50, 30)
    from detector.evaluation.detections_io import read_detections_json

    f = read_detections_json(tmp_path / "dets.json")
    assert f.classes == ["n0001"] and sorted(f.by_image()) == ["alpha", "cmyk", "deep16", "gray", "rgb"]
    gray = [im for im in f.images if im.image_id == "gray"][0]
    assert (gray.width, gray.height) == (50, 30)
    np.testing.assert_allclose(gray.detections.boxes, [[0, 0, 50, 30]])


def test_folder_input_and_nothing_detected(tool, tmp_path, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(d / "a.png")   # black: score 1/2 < 0.9
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(d / "b.jpg")
    (d / "notes.txt").write_text("not an image")
    rc = tool.main([str(d), "--whole-image", "--score-threshold", "0.9"])
    assert rc == 0
    assert capsys.readouterr().out == ""


def test_backend_option_is_the_model_backend_override(monkeypatch, tmp_path, capsys):
    """``--backend NAME`` is ``--set model.backend=NAME``: the classifier is built with it; an unknown name is a
    usage error that lists the backends."""
    mod = load_tool("detect")
    ens = Ensemble([RegionClassifier(BrightNet(), ("n0001",), ("bright thing",), IDENTITY)],
                   batch_size=4, channels_last=False)
    built = []
    import detector.classifier

    monkeypatch.setattr(detector.classifier, "build_classifier", lambda model_cfg, *a, **k: built.append(
        model_cfg.backend) or ens)
    Image.fromarray(np.full((16, 16, 3), 250, np.uint8)).save(tmp_path / "a.png")
    assert mod.main([str(tmp_path / "a.png"), "--whole-image", "--backend", "torch_int8"]) == 0
    assert mod.main([str(tmp_path / "a.png"), "--whole-image"]) == 0
    assert built == ["torch_int8", "eager"]
    assert capsys.readouterr().out.count("bright thing") == 2
    with pytest.raises(SystemExit) as e:
        mod.main([str(tmp_path / "a.png"), "--backend", "int8"])
    assert e.value.code == 2
    assert "argument --backend: invalid choice: 'int8' (choose from eager, bf16, onnx, onnx_int8, torch_int8, mnn)" \
        in capsys.readouterr().err.replace("'eager', 'bf16', 'onnx', 'onnx_int8', 'torch_int8', 'mnn'",
                                           "eager, bf16, onnx, onnx_int8, torch_int8, mnn")


def test_ilsvrc_submission(monkeypatch, tmp_path, shared_data, capsys):
    """Images named as val images -> submission lines with their val.txt index (its line: val_00000007 is
    line 3) and DET_IDs."""
    from detector.evaluation.ilsvrc import read_submission

    mod = load_tool("detect")
    # classes: DET_ID 2 (airplane) and 1 (accordion), in that order: labels must be mapped to DET_IDs
    ens = Ensemble([RegionClassifier(ConstNet2(), ("n02691156", "n02672831"), ("airplane", "accordion"), IDENTITY)],
                   channels_last=False)
    import detector.classifier  # where main() imports it from, after starting the first image's proposals

    monkeypatch.setattr(detector.classifier, "build_classifier", lambda *a, **k: ens)
    devkit = shared_data / "ilsvrc2014_devkit"
    for name in ("ILSVRC2012_val_00000001", "ILSVRC2012_val_00000007"):
        Image.fromarray(np.full((20, 30, 3), 100, np.uint8)).save(tmp_path / f"{name}.png")
    sub = tmp_path / "sub.txt"
    rc = mod.main([str(tmp_path / "ILSVRC2012_val_00000001.png"), str(tmp_path / "ILSVRC2012_val_00000007.png"),
                   "--whole-image", "--devkit", str(devkit), "--submission", str(sub), "--score-threshold", "0.1"])
    assert rc == 0
    s = read_submission(sub)
    assert sorted(zip(s.image_index.tolist(), s.det_id.tolist())) == [(1, 1), (1, 2), (3, 1), (3, 2)]
    np.testing.assert_allclose(s.boxes[0], [1, 1, 30, 20])  # 1-based inclusive of the whole 30x20 image
    # column 1 = airplane (DET_ID 2) -> 0.2447; column 2 = accordion (DET_ID 1) -> 0.6652
    np.testing.assert_allclose(s.conf[s.det_id == 2], 0.2447, atol=1e-4)
    np.testing.assert_allclose(s.conf[s.det_id == 1], 0.6652, atol=1e-4)
    # an image whose stem is not a val image: refused before anything runs
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "holiday.png")
    from detector.cli import run

    assert run(mod.main, [str(tmp_path / "holiday.png"), "--whole-image", "--devkit", str(devkit),
                          "--submission", str(sub)]) == 2
    assert "not in" in capsys.readouterr().err


class ConstNet2(nn.Module):
    """Logits [0, 1, 2] for every region: softmax [0.0900, 0.2447, 0.6652]."""

    def forward(self, x):
        return torch.tensor([[0.0, 1.0, 2.0]]).expand(len(x), -1)


def test_usage_errors_are_one_line(tmp_path, capsys):
    from detector.cli import run

    mod = load_tool("detect")
    assert run(mod.main, [str(tmp_path / "x.jpg"), "--config", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "nope.yaml" in err[0]


def test_image_workers_write_what_one_process_writes(tmp_path, capsys):
    """--image-workers 2 (real checkpoint, spawned workers): the same JSON as one process, the broken image
    counted as one error line; combining it with --overlap-workers is a usage error."""
    from detector.cli import run
    from test_classifier import _write_checkpoint

    _write_checkpoint(tmp_path / "m.pt")
    (tmp_path / "in").mkdir()
    files = write_inputs(tmp_path / "in")
    mod = load_tool("detect")
    common = [str(tmp_path / "in"), "--checkpoint", str(tmp_path / "m.pt"), "--whole-image", "--threads", "2",
              "--score-threshold", "0", "--set", "warp.size=64", "--set", "warp.mode=square"]
    assert run(mod.main, common + ["--json", str(tmp_path / "one.json")]) == 1  # 1: the broken image
    capsys.readouterr()
    assert run(mod.main, common + ["--image-workers", "2", "--json", str(tmp_path / "two.json")]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "broken.jpg" in err[0]
    from detector.evaluation.detections_io import read_detections_json

    assert sorted(read_detections_json(tmp_path / "two.json").by_image()) == sorted(
        p.stem for k, p in files.items() if k != "broken")
    one, two = (json.loads((tmp_path / f).read_text()) for f in ("one.json", "two.json"))
    assert one == two
    assert run(mod.main, common + ["--image-workers", "2", "--overlap-workers", "1"]) == 2
    assert "choose one" in capsys.readouterr().err


def test_early_proposals_change_nothing_but_where_they_run(tool, tmp_path, capsys):
    """The first image's Selective Search in a worker started before the models load (the default) against
    --no-early-proposals: the same JSON; an unreadable first image comes back from the worker as its error line;
    the log (the tool's stderr) says where each image's proposals were computed."""
    from detector.evaluation.detections_io import read_detections_json

    files = write_inputs(tmp_path)
    argv = [str(files[k]) for k in ("rgb", "broken", "gray")] + [
        "--score-threshold", "0", "--set", "proposals.selective_search.resize_width=120",
        "--set", "proposals.selective_search.superpixel_scale=1.0"]
    got = {}
    for mode, extra in (("early", []), ("late", ["--no-early-proposals"])):
        assert tool.main(argv + extra + ["--json", str(tmp_path / f"{mode}.json")]) == 1  # the broken image
        err = capsys.readouterr().err.splitlines()
        errors = [line for line in err if line.startswith("error:")]
        assert len(errors) == 1 and "broken.jpg" in errors[0]
        logged = [line for line in err if "proposals (" in line]
        assert [("in a worker" in line) for line in logged] == [mode == "early", False]
        assert "rgb: " in logged[0] and "gray: " in logged[1]
        got[mode] = read_detections_json(tmp_path / f"{mode}.json")
    early, late = got["early"], got["late"]
    assert [im.image_id for im in early.images] == [im.image_id for im in late.images] == ["rgb", "gray"]
    for a, b in zip(early.images, late.images):
        assert len(a.detections) == len(b.detections) > 0
        np.testing.assert_array_equal(a.detections.boxes, b.detections.boxes)
        np.testing.assert_array_equal(a.detections.scores, b.detections.scores)


def test_benchmark_times_the_command_a_user_runs(tmp_path):
    """detector.bench.bench_detect_command: real tools/detect.py processes (a tiny checkpoint, a small Selective
    Search), one pair; the figures it reports are the ones in each command's own log line, and the default run
    had its proposals from the worker, the other not."""
    from detector.bench import bench_detect_command
    from test_classifier import _write_checkpoint

    _write_checkpoint(tmp_path / "m.pt")
    image = write_inputs(tmp_path)["rgb"]
    args = ["--checkpoint", str(tmp_path / "m.pt"), "--threads", "1", "--score-threshold", "0",
            "--set", "warp.size=64", "--set", "warp.mode=square",
            "--set", "proposals.selective_search.resize_width=120",
            "--set", "proposals.selective_search.superpixel_scale=1.0"]
    got = bench_detect_command(REPO / "tools" / "detect.py", image, args, runs=1)
    (early,), (late,) = got["early"], got["late"]
    assert early["in_worker"] and not late["in_worker"] and early["image"] == late["image"] == "rgb"
    assert early["proposals"] == late["proposals"] > 0
    for r in (early, late):
        assert r["wall_s"] > r["classify_s"] + r["warp_s"]  # the whole process, start-up included
    assert got["early_median_image_s"] == pytest.approx(early["warp_s"] + early["classify_s"])
    assert got["late_median_image_s"] == pytest.approx(late["warp_s"] + late["classify_s"] + late["proposals_s"])
    assert got["late_median_outside_s"] == pytest.approx(late["wall_s"] - late["warp_s"] - late["classify_s"])
    with pytest.raises(RuntimeError, match="exited 2"):
        bench_detect_command(REPO / "tools" / "detect.py", image, args + ["--config", str(tmp_path / "no.yaml")], 1)


@pytest.mark.parametrize("overlap", ["0", "1"])
def test_the_command_leaves_without_teardown_and_loses_nothing(tmp_path, overlap):
    """``python tools/detect.py`` ends by ``exit_now`` (no interpreter teardown): the exit code, every stdout
    line, the JSON and the pictures are all there, and no worker resource is reported leaked, with and without
    the Selective Search overlap's worker pool."""
    import subprocess
    import sys

    from detector.evaluation.detections_io import read_detections_json
    from test_classifier import _write_checkpoint

    _write_checkpoint(tmp_path / "m.pt")
    (tmp_path / "in").mkdir()
    files = write_inputs(tmp_path / "in")
    cmd = [sys.executable, str(REPO / "tools" / "detect.py"), str(files["rgb"]), str(files["broken"]),
           str(files["gray"]), "--checkpoint", str(tmp_path / "m.pt"), "--threads", "1", "--score-threshold", "0",
           "--set", "warp.size=64", "--set", "warp.mode=square", "--set", "proposals.selective_search.resize_width=120",
           "--set", "proposals.selective_search.superpixel_scale=1.0", "--overlap-workers", overlap,
           "--json", str(tmp_path / "d.json"), "--out", str(tmp_path / "pics")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr  # the broken image
    assert "leaked" not in done.stderr and "Traceback" not in done.stderr
    got = read_detections_json(tmp_path / "d.json")
    assert [im.image_id for im in got.images] == ["rgb", "gray"]
    assert len(done.stdout.splitlines()) == sum(len(im.detections) for im in got.images) > 0
    assert sorted(p.name for p in (tmp_path / "pics").iterdir()) == ["gray.png", "rgb.jpg"]


def test_region_progress_draws_one_bar_per_image_and_closes_it(monkeypatch):
    """tools/detect.py's regions bar: created at the first batch with the image's total, advanced by each batch,
    closed (removed, leave=False) with the last one, and only on a terminal unless told (disable=None)."""
    tool = load_tool("detect")
    bars = []

    class FakeBar:
        def __init__(self, **kw):
            self.kw, self.n, self.closed = kw, 0, False
            bars.append(self)

        def update(self, k):
            self.n += k

        def close(self):
            self.closed = True

    monkeypatch.setattr(tool, "tqdm", FakeBar)
    update = tool.region_progress("raccoon-70")
    update(16, 40)
    update(16, 40)
    assert len(bars) == 1 and bars[0].n == 32 and not bars[0].closed
    update(8, 40)
    assert bars[0].n == 40 and bars[0].closed
    assert bars[0].kw["total"] == 40 and bars[0].kw["desc"] == "raccoon-70 regions"
    assert bars[0].kw["leave"] is False and bars[0].kw["disable"] is None
