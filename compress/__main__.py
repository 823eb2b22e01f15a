"""`python -m compress` and the `compress` console script.

The import of the CLI is inside the one-line handling too: Ctrl-C in the first second (while torch and
the runtimes import) says one line and exits 130, not thirty lines of KeyboardInterrupt."""

import sys

INTERRUPTED = 130  # compress.cli.faults.INTERRUPTED (not imported: importing it is what may be interrupted)


def run() -> int:
    try:
        from compress.cli.main import main
    except KeyboardInterrupt:
        print("compress: interrupted while starting; nothing was done", file=sys.stderr, flush=True)
        return INTERRUPTED
    return main()


if __name__ == "__main__":
    raise SystemExit(run())
