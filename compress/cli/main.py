"""`python -m compress ...`: parse the flags, build one Session, dispatch to the layer below.

Logs go to stderr; `--json` prints result rows on stdout. Bad input is one line and a non-zero exit.
"""

from __future__ import annotations

import shlex
import sys
from typing import Sequence

from compress.cli.commands import COMMANDS
from compress.cli.faults import one_line_errors, sigterm_as_interrupt
from compress.cli.parser import build_parser
from compress.cli.setup import prepare
from compress.scaleout import dist


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "python -m compress " + shlex.join(argv)
    with sigterm_as_interrupt(), one_line_errors() as outcome:
        ns = build_parser().parse_args(argv)  # inside: Ctrl-C while the registries import is one line too
        dist.start(getattr(ns, "device", "auto"))  # under torchrun: join the job before anything is checked
        prepare(ns)
        COMMANDS[ns.command](ns, command)
        dist.stop()
    return outcome.code
