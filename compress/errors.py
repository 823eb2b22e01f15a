"""One exception type for problems the user can fix.

The CLI prints it as a single line and exits non-zero, without a traceback: a traceback
tells a user where our code is, not what to change in their command.
"""


class CompressError(Exception):
    """A user-facing error: the message names the problem and the fix."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of a library's exception (OpenVINO's, Inductor's and the exporters' run to pages)."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
