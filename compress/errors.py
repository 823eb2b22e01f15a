"""One exception type for problems the user can fix.

The CLI prints it as a single line and exits non-zero, without a traceback: a traceback
tells a user where our code is, not what to change in their command.
"""


class CompressError(Exception):
    """A user-facing error: the message names the problem and the fix."""
