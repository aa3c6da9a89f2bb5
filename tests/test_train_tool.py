"""tools/train_classifier.py end to end on a tiny VOC-format set: cached frozen features, validation mAP
every N steps (best.pt), the run folder's files, refusal to overwrite, --resume to a longer schedule, and
detect_split.py evaluating the result. Needs the BVLC weights (skips without them)."""
import json

import numpy as np
import pytest
from PIL import Image

from conftest import load_tool
from detector.datasets.xml_common import write_xml

_tool = load_tool


@pytest.fixture()
def voc(tmp_path):
    """6 images 96x128: a red square ('red') and a blue one ('blue'); split files train (4) / test (2)."""
    root = tmp_path / "voc"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        arr = rng.integers(100, 140, (96, 128, 3)).astype(np.uint8)
        r = np.array([8 + 3 * i, 10, 48 + 3 * i, 50], np.float32)
        b = np.array([70, 40 - 3 * i, 118, 88 - 3 * i], np.float32)
        arr[10:50, 8 + 3 * i:48 + 3 * i] = (220, 30, 30)
        arr[40 - 3 * i:88 - 3 * i, 70:118] = (30, 30, 220)
        Image.fromarray(arr).save(root / "JPEGImages" / f"im{i}.jpg", quality=95)
        write_xml(root / "Annotations" / f"im{i}.xml", f"im{i}.jpg", 128, 96,
                  [("red", r + np.float32([1, 1, 0, 0]), False), ("blue", b + np.float32([1, 1, 0, 0]), False)])
    (tmp_path / "train.txt").write_text("".join(f"im{i}\n" for i in range(4)))
    (tmp_path / "test.txt").write_text("im4\nim5\n")
    return tmp_path


def test_train_tool_run_folder_validation_resume_and_evaluation(voc, tmp_path, bvlc_weights, capsys):
    data = ["--dataset", "voc", "--images-dir", str(voc / "voc/JPEGImages"), "--annotations-dir",
            str(voc / "voc/Annotations"), "--classes", "red,blue"]
    sets = ["warp.size=64", "warp.context_pad=4", "train.batch_size=16", "train.eval_every=2",
            "train.checkpoint_every=2", "train.freeze_below=inception_5a", "train.feature_layer=pool4",
            "train.max_fg_per_image=6", "train.max_bg_per_image=10", "train.threads=1", "train.base_lr=0.003",
            "proposals.selective_search.resize_width=128"]
    out = tmp_path / "run"
    common = data + ["--split-file", str(voc / "train.txt"), "--val-split-file", str(voc / "test.txt"),
                     "--weights", str(bvlc_weights), "--proposal-cache", str(tmp_path / "props"),
                     "--feature-cache", str(tmp_path / "feats"), "--out", str(out)]
    args = common + sum((["--set", s] for s in sets), [])
    tool = _tool("train_classifier")
    assert tool.main(args + ["--set", "train.iterations=4"]) == 0
    for f in ("last.pt", "best.pt", "train.log", "curves.png", "summary.json"):
        assert (out / f).is_file(), f
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 4 and [v[0] for v in summary["validation"]] == [2, 4]
    assert all(0.0 <= v[1] <= 1.0 for v in summary["validation"])
    assert summary["best_metric"] == max(v[1] for v in summary["validation"])
    assert len(list((tmp_path / "feats").rglob("*.npy"))) == 4 + 2  # training images + validation images
    assert len([d for d in (tmp_path / "feats").iterdir() if d.is_dir()]) == 2  # one folder each

    with pytest.raises(Exception, match="already holds a run"):
        tool.main(args + ["--set", "train.iterations=4"])
    assert tool.main(args + ["--set", "train.iterations=6", "--resume"]) == 0  # continues 4 -> 6
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 6 and [v[0] for v in summary["validation"]] == [2, 4, 6]

    capsys.readouterr()
    rc = _tool("detect_split").main(["--checkpoints", str(out / "last.pt"), "--names", "ft"] + data +
                                    ["--split-file", str(voc / "test.txt"), "--proposal-cache",
                                     str(tmp_path / "props"), "--set", "proposals.selective_search.resize_width=128",
                                     "--out", str(tmp_path / "eval")])
    assert rc == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("ft: mAP ") and "red=" in line and "blue=" in line
    res = json.loads((tmp_path / "eval" / "results.json").read_text())
    # the last validation ran the same model over the same images and proposals: the same mAP
    assert abs(res["models"]["ft"]["mAP"] - summary["validation"][-1][1]) < 0.02
