"""compute_proposals.py / proposal_recall.py end to end on a tiny VOC-format set written by the test."""
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import load_tool
from detector.datasets.xml_common import write_xml

_tool = load_tool


def _dataset(root: Path) -> None:
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations").mkdir()
    for i in range(2):
        arr = np.full((120, 160, 3), 90, np.uint8)
        arr[20:80, 30:110] = (220, 40, 40)
        Image.fromarray(arr).save(root / "JPEGImages" / f"im{i}.jpg")
        write_xml(root / "Annotations" / f"im{i}.xml", f"im{i}.jpg", 160, 120,
                  [("thing", np.array([30, 20, 110, 80], np.float32), False)])


def test_recall_tool_prints_recall_last_and_compute_tool_fills_cache(tmp_path, capsys):
    _dataset(tmp_path / "voc")
    common = ["--dataset", "voc", "--images-dir", str(tmp_path / "voc/JPEGImages"), "--annotations-dir",
              str(tmp_path / "voc/Annotations"), "--set", "proposals.selective_search.resize_width=160"]
    assert _tool("compute_proposals").main(common + ["--out", str(tmp_path / "cache"), "--workers", "1"]) == 0
    assert len(list((tmp_path / "cache").glob("im*.npz"))) == 2
    capsys.readouterr()
    rc = _tool("proposal_recall").main(common + ["--cache", str(tmp_path / "cache"), "--workers", "1",
                                                 "--json", str(tmp_path / "r.json"),
                                                 "--plot", str(tmp_path / "r.png")])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and out[-1] == "recall@0.5: 1.0000"  # the flat red rectangle is found
    assert [line.split(":")[0] for line in out[1:]] == ["boxes/image", "MABO", "seconds/image", "recall@0.5"]
    assert (tmp_path / "r.png").stat().st_size > 0


def test_recall_tool_compare_keys_figures_by_method(tmp_path, capsys):
    import json

    _dataset(tmp_path / "voc")
    common = ["--dataset", "voc", "--images-dir", str(tmp_path / "voc/JPEGImages"), "--annotations-dir",
              str(tmp_path / "voc/Annotations"), "--set", "proposals.selective_search.resize_width=160",
              "--workers", "1", "--cache", str(tmp_path / "cache")]
    assert _tool("proposal_recall").main(common + ["--compare", "ss", "--json", str(tmp_path / "c.json"),
                                                   "--plot", str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == "== ss" and out[-1] == "recall@0.5: 1.0000"
    figures = json.loads((tmp_path / "c.json").read_text())
    assert list(figures) == ["ss"] and figures["ss"]["recall"] == 1.0
    assert len(list((tmp_path / "cache" / "ss").glob("im*.npz"))) == 2  # one cache folder per method


def test_recall_plot_title_names_the_data_not_the_format(tmp_path, monkeypatch):
    _dataset(tmp_path / "BCCD")
    tool = _tool("proposal_recall")
    titles = []
    monkeypatch.setattr(tool, "plot_recall_curves", lambda reports, path, title: titles.append(title))
    common = ["--dataset", "voc", "--root", str(tmp_path / "BCCD"), "--split-file", str(tmp_path / "val.txt"),
              "--set", "proposals.selective_search.resize_width=160", "--workers", "1",
              "--cache", str(tmp_path / "cache"), "--plot", str(tmp_path / "p.png")]
    (tmp_path / "val.txt").write_text("im0\nim1\n")
    assert tool.main(common) == 0
    assert tool.main(common + ["--title", "my cells"]) == 0
    assert titles == ["BCCD val: 2 images", "my cells"]
