"""The tools' number options (detector.cli.number): a value no run can use is a usage error naming the option,
raised while the command line is parsed, before any model or data is loaded."""
from __future__ import annotations

import argparse

import pytest
from conftest import load_tool

from detector.cli import number
from detector.config import AT_LEAST_1, POSITIVE, Bound


def test_number_parses_within_its_bound_and_refuses_the_rest():
    assert number()("0") == 0 and number()("12") == 12
    assert number(float, POSITIVE)("0.25") == 0.25
    assert number(float, Bound(0, 1, lo_open=True))("1") == 1.0
    for parse, text, words in [(number(), "-1", "must be >= 0, got -1"), (number(int, AT_LEAST_1), "0", ">= 1"),
                               (number(), "2.5", "expected a whole number, got '2.5'"),
                               (number(), "two", "expected a whole number"),
                               (number(float, POSITIVE), "0", "must be > 0, got 0"),
                               (number(float, POSITIVE), "nan", "must be > 0"),
                               (number(float, POSITIVE), "inf", "must be > 0"),
                               (number(float, Bound(0, 1, lo_open=True)), "1.5", "must be in (0, 1], got 1.5")]:
        with pytest.raises(argparse.ArgumentTypeError, match=words.replace("(", r"\(").replace("[", r"\[")):
            parse(text)


# (tool, argv, the option named): before, detect.py ran with --threads -2 / --overlap-workers -1 as if they were
# not given, and compute_proposals.py --workers 0 as with 1.
CASES = [
    ("detect", ["img.jpg", "--threads", "-2"], "--threads"),
    ("detect", ["img.jpg", "--overlap-workers", "-1"], "--overlap-workers"),
    ("detect", ["img.jpg", "--image-workers", "-1"], "--image-workers"),
    ("detect", ["img.jpg", "--batch-size", "-8"], "--batch-size"),
    ("detect_split", ["--workers", "0"], "--workers"),
    ("detect_split", ["--max-proposals", "-5"], "--max-proposals"),
    ("compute_proposals", ["--workers", "0"], "--workers"),
    ("proposal_recall", ["--iou", "0"], "--iou"),
    ("train_classifier", ["--val-limit", "-1"], "--val-limit"),
    ("train_multibox", ["--seed", "-3"], "--seed"),
    ("benchmark", ["--regions", "0"], "--regions"),
    ("benchmark", ["--e2e-images", "-1"], "--e2e-images"),
    ("profile_onnx", ["--rounds", "0"], "--rounds"),
]


@pytest.mark.parametrize("name,argv,option", CASES, ids=[f"{n} {' '.join(a)}" for n, a, _ in CASES])
def test_tools_refuse_unusable_counts_while_parsing(name, argv, option, capsys):
    tool = load_tool(name)
    with pytest.raises(SystemExit) as e:
        tool.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: " in err and ("must be" in err or "expected" in err), err
