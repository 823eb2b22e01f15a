"""Every command the README and docs/ show parses with the CLI's own parser; every Python snippet imports.

A renamed flag then fails here, not in a user's terminal. The rules for what a page may show are in
docs/development.md ("Tests"): placeholders `<...>`, alternatives `a|b`, optional `[--flag]`, torchrun
and scheduler lines.
"""

from __future__ import annotations

import ast
import importlib
import re
import shlex
from pathlib import Path

import pytest

from compress.cli.parser import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_COMPRESS = ("pip ", "pytest", "sbatch ", "cp ", "mkdir ", "#SBATCH", "apt-get ",
                "python bundle/predict.py")  # shown, not ours to parse (the bundle's runner has its own test)
SAMPLES = {"$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT": "1/8", "$W": "w1", "$TMPDIR": "/tmp"}


def _blocks(page: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", page.read_text(), flags=re.S | re.M)


def _lines(block: str) -> list[str]:
    """Shell lines of a block: continuations joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    out = []
    for line in joined.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()  # a trailing comment (no '#' appears inside our commands)
        if line and not (line.startswith("#") and not line.startswith("#SBATCH")):
            out.append(line)
    return out


def _argv(command: str) -> list[str] | None:
    """The compress arguments of one shell command, placeholders filled in; None for a command not ours."""
    if command.startswith(NOT_COMPRESS) or re.match(r"^[A-Z_]+=", command):
        return None
    for name, value in SAMPLES.items():
        command = command.replace(name, value)
    command = re.sub(r"<[^>]+>", "x", command)  # <run-id>, <the depthwise row>
    command = re.sub(r"\[(--[^\]]+)\]", r"\1", command)  # [--num-classes 3]: optional, parsed with it
    if command.startswith("torchrun "):
        command = "python " + command[command.index("-m compress"):]
    if not command.startswith("python -m compress"):
        raise AssertionError(f"a command the docs test does not know how to check: {command!r}")
    words = shlex.split(command)[3:]
    return [w.split("|")[0] if "|" in w and not w.startswith("-") else w for w in words]  # a|b|c: the first


def _commands() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for block in _blocks(page, "bash"):
            for line in _lines(block):
                found += [(page.name, part.strip()) for part in line.split("&&")]
    return found


COMMANDS = [(page, command) for page, command in _commands() if _argv(command) is not None]


def test_the_pages_show_commands() -> None:
    assert len(COMMANDS) >= 40  # the docs test reads what the pages hold


@pytest.mark.parametrize("page,command", COMMANDS, ids=[f"{p}:{c[:60]}" for p, c in COMMANDS])
def test_every_shown_command_parses(page: str, command: str, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        build_parser().parse_args(_argv(command))
    except SystemExit as exc:
        if exc.code != 0:  # --help exits 0
            pytest.fail(f"{page}: `{command}` does not parse: {capsys.readouterr().err.strip()}")


def test_a_wrong_flag_is_caught(capsys: pytest.CaptureFixture[str]) -> None:
    """The check above can fail: a flag that does not exist is refused by the same path."""
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(_argv("python -m compress run pruning --no-latency-ort") or [])
    assert exc.value.code == 2


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_python_snippets_import(page: Path) -> None:
    for block in _blocks(page, "python"):
        tree = ast.parse(block)  # a snippet that does not compile fails here
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("compress"):
                module = importlib.import_module(node.module)
                missing = [a.name for a in node.names if not hasattr(module, a.name)]
                assert not missing, f"{page.name}: `from {node.module} import {', '.join(missing)}` fails"
