"""Progress lines: on stderr (stdout is for `--json` results), and under torchrun from rank 0 alone."""

from __future__ import annotations

import sys

from compress.scaleout import dist


def log(msg: str) -> None:
    """Progress and notes go to stderr: stdout is for results (`--json`). Under torchrun, rank 0 speaks."""
    if dist.current().main:
        print(msg, file=sys.stderr, flush=True)
