"""Every fix an error message suggests can be typed in the command that was run.

The messages are read from the source (every string in a ``raise ...(...)``): each ``--flag`` they
name must be an option of an rrcunet command, the flags of the readers and preprocessing must be
options of every command that reads a CT, and a Python keyword (``name=True``) is never the only
advice: it comes with its command-line form ("... --flag (name=True in Python)").
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

from rrcunet.cli.main import build_parser

SRC = Path(__file__).resolve().parents[2] / "src" / "rrcunet"
#: The commands that read a CT with rrcunet.io.read_image.
CT_COMMANDS = ("predict", "convert", "lungmask")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]+")
PYTHON_KWARG = re.compile(r"\b[a-z_]+=(True|False|'[^']*')")


def _messages() -> list[tuple[str, str]]:
    """(where, text) for every raise in the source; f-string holes become ``{}``."""
    out = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                parts = []
                for sub in ast.walk(node.exc):
                    if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                        parts.append(sub.value)
                text = "".join(parts)
                if text:
                    out.append((f"{path.relative_to(SRC)}:{node.lineno}", text))
    return out


def _options(command: str | None = None) -> set[str]:
    """The option strings of one command, or of every command and sub-command."""
    top = build_parser()
    commands = top._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    todo, found = ([commands[command]] if command else [top]), set()
    while todo:
        parser = todo.pop()
        for action in parser._actions:
            found.update(action.option_strings)
            if isinstance(action, argparse._SubParsersAction) and command is None:
                todo.extend(action.choices.values())
    return found


def test_every_suggested_flag_exists():
    known = _options()
    bad = [f"{where}: {flag}" for where, text in _messages() for flag in FLAG.findall(text) if flag not in known]
    assert not bad, "messages suggest flags no command has:\n" + "\n".join(bad)


def test_the_readers_advice_works_in_every_command_that_reads_a_ct():
    lower = ("io/", "preprocessing/", "lungmask/")
    flags = {flag for where, text in _messages() if where.startswith(lower) for flag in FLAG.findall(text)}
    flags -= {"--rtstruct", "--seg", "--model", "--method", "--no-reference-check", "--on-empty-lung"}
    assert flags, "the readers suggest no flag at all: the scan is broken"
    # predict reads each series of a folder as its own case, so it is never asked to choose one
    missing = [f"{cmd} lacks {flag}" for cmd in CT_COMMANDS for flag in sorted(flags) if flag not in _options(cmd)
               and (cmd, flag) != ("predict", "--series-uid")]
    assert not missing, "\n".join(missing)


def test_python_keywords_always_come_with_their_flag():
    bad = [f"{where}: {text[:120]}" for where, text in _messages()
           if PYTHON_KWARG.search(text) and "in Python" not in text]
    assert not bad, "advice that only works in Python:\n" + "\n".join(bad)


def test_the_scan_can_fail():
    assert FLAG.findall("pass --no-such-flag or --x2") == ["--no-such-flag", "--x2"]
    assert PYTHON_KWARG.search("pass check_intensity=False") and not PYTHON_KWARG.search("a == b")
    assert "--no-such-flag" not in _options()
