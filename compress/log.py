"""Progress lines: on stderr (stdout is for `--json` results), and under torchrun from rank 0 alone."""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import warnings
from typing import Iterator

from compress.errors import printable
from compress.scaleout import dist


def log(msg: str) -> None:
    """Progress and notes go to stderr: stdout is for results (`--json`). Under torchrun, rank 0 speaks."""
    if dist.current().main:
        print(printable(msg), file=sys.stderr, flush=True)


@contextlib.contextmanager
def quiet(logger: str = "", stderr: bool = False) -> Iterator[None]:
    """A library's progress prints, warnings and log lines kept off stdout (and stderr): stdout is for --json.

    ONNX Runtime's quantizer prints on stdout and logs through the root logger; NNCF logs through
    "nncf" and draws progress bars on stderr."""
    sink = io.StringIO()
    target = logging.getLogger(logger)
    level = target.level
    target.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), \
                (contextlib.redirect_stderr(sink) if stderr else contextlib.nullcontext()):
            warnings.simplefilter("ignore")
            yield
    finally:
        target.setLevel(level)
