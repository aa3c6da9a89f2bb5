"""Assemble README.md from docs/readme_header.md and the sections in docs/sections/ (python docs/build_readme.py).

Each part of the system keeps its documentation (commands + measured figures) in its own section file; the
README is their concatenation in pipeline order, under the header with the two top commands.
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["evaluation", "proposals", "googlenet", "detect", "training", "multibox", "speed", "status"]
INSTALL = ("python3 -m venv .venv && .venv/bin/pip install -e '.[test,onnx,mnn]' && "
           "GOOGLENET_WEIGHTS=../shared/weights/bvlc_googlenet/bvlc_googlenet.npz .venv/bin/python tools/detect.py "
           "../shared/data/ilsvrc13_val2_227/Data/ILSVRC2012_val_00000347.JPEG --devkit ../shared/data/ilsvrc2014_devkit "
           "--out out/detect --json out/detect/detections.json")


def main() -> None:
    head = (ROOT / "docs" / "readme_header.md").read_text()
    head = head.replace("INSTALL_AND_DETECT", INSTALL).replace("TEST_MINUTES", "2-4")
    parts = [head.rstrip() + "\n"]
    for name in ORDER:
        p = ROOT / "docs" / "sections" / f"{name}.md"
        if p.is_file():
            text = p.read_text().strip()
            if text.startswith("## "):
                pass
            elif text.startswith("# "):
                text = "#" + text
            parts.append(text + "\n")
    (ROOT / "README.md").write_text("\n".join(parts))
    ci = ROOT / ".ci" / "run"
    lines = ci.read_text().splitlines()
    lines = [INSTALL if line.startswith("python3 -m venv .venv") else line for line in lines]
    ci.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
