"""One exception type for problems the user can fix.

The CLI prints it as a single line and exits non-zero, without a traceback: a traceback
tells a user where our code is, not what to change in their command.
"""

import re


class CompressError(Exception):
    """A user-facing error: the message names the problem and the fix."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of a library's exception (OpenVINO's, Inductor's and the exporters' run to pages)."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


# C0 and C1 controls, line and paragraph separators, undecodable bytes of a file name (surrogates), and the
# bidirectional controls (LRM, RLM, ALM, the embeddings, overrides and isolates): a name holding U+202E would
# show reversed in a terminal and a report, hiding what follows it
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """Text with its control characters shown as escapes (`\\n`, `\\x1b`, `\\u202e`), never acted on.

    File and folder names, flags and stored strings reach the terminal and the report: a name holding
    an escape sequence would retitle or clear the terminal, a newline would end a code span."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)
