"""Every ``python tools/<name>.py ...`` command shown in README.md is accepted by that tool's own command-line
parser (nothing is run: parsing stops right after ``parse_args``). Users copy these commands; a renamed or
removed option, or a value a tool now refuses, fails here instead of on their machine."""
from __future__ import annotations

import argparse
import re
import shlex

import pytest
from conftest import REPO, load_tool

SHELL_STOPS = {"|", "||", "&&", ";", "&"}
TOOL = re.compile(r"(?:^|\s)(?:\S*/)?python3? (tools/(\w+)\.py)(?=\s|$)")


def readme_commands(text: str) -> list[tuple[str, list[str]]]:
    """``(tool name, argv)`` of each tools/ command in the README's code blocks: continuation lines joined, the
    blocks' own ``NAME="..."`` variables substituted, optional ``[...]`` groups dropped, elided commands (``...``
    standing for arguments) left out, and the command cut at the first shell operator, redirection or comment."""
    out = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        block = re.sub(r"\\\n\s*", " ", block)
        env = dict(re.findall(r'^\s*([A-Z][A-Z0-9_]*)="([^"]*)"\s*$', block, re.M))
        for line in block.splitlines():
            m = TOOL.search(line)
            if not m:
                continue
            rest = line[m.end():]
            while re.search(r"\[[^\[\]]*\]", rest):
                rest = re.sub(r"\[[^\[\]]*\]", " ", rest)
            rest = re.sub(r"\$\{?([A-Za-z_]\w*)\}?", lambda v: env.get(v.group(1), "x"), rest)
            argv = []
            for tok in shlex.split(rest, comments=True):
                if tok in SHELL_STOPS or tok.startswith((">", "2>")):
                    break
                argv.append(tok)
            if "..." in argv:
                continue
            out.append((m.group(2), argv))
    return out


COMMANDS = readme_commands((REPO / "README.md").read_text())


class _Parsed(Exception):
    pass


def test_the_readme_shows_commands_of_every_main_tool():
    names = {name for name, _ in COMMANDS}
    assert len(COMMANDS) >= 20
    assert {"detect", "evaluate", "train_classifier", "detect_split", "benchmark", "train_multibox",
            "proposal_recall", "compute_proposals"} <= names


@pytest.mark.parametrize("name,argv", COMMANDS, ids=[f"{i}:{n}" for i, (n, _) in enumerate(COMMANDS)])
def test_readme_command_parses(name, argv, monkeypatch, capsys):
    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise _Parsed(parse(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    tool = load_tool(name)
    try:
        tool.main(argv)
    except _Parsed:
        return
    except SystemExit as e:
        pytest.fail(f"tools/{name}.py refused {argv}: {capsys.readouterr().err.strip().splitlines()[-1:]} "
                    f"(exit {e.code})")
    pytest.fail(f"tools/{name}.py {argv}: main returned without parsing its command line")


def test_the_extraction_itself():
    text = ('```bash\nX="--dataset voc --root R"\n# a comment\n'
            'GOOGLENET_WEIGHTS=w.npz nice -n 10 python tools/detect.py a.jpg [--json d.json] \\\n'
            '    --set model.backend=$be --out o 2> log.txt | tail -1  # done\n'
            'python tools/train_classifier.py $X --out r [--seed S]\npython tools/detect_split.py ... --out e\n```\n'
            'python tools/evaluate.py outside a code block\n')
    assert readme_commands(text) == [("detect", ["a.jpg", "--set", "model.backend=x", "--out", "o"]),
                                     ("train_classifier", ["--dataset", "voc", "--root", "R", "--out", "r"])]
