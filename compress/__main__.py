"""`python -m compress` and the `compress` console script.

The import of the CLI is inside the one-line handling too: Ctrl-C in the first second (while torch and
the runtimes import) says one line and exits 130, not thirty lines of KeyboardInterrupt."""

import sys

INTERRUPTED = 130  # compress.cli.faults.INTERRUPTED (not imported: importing it is what may be interrupted)


def _predict(argv: list[str]) -> int:
    """`compress predict DIR PATH...` runs the bundle's torch-free runner without importing the rest of compress
    (PyTorch alone costs seconds): the same start-up as the bundle's own predict.py."""
    from compress.deploy.runner import main as predict

    if not argv or argv[0].startswith("-"):
        from compress.cli.main import main  # `compress predict --help` or no folder: the CLI's own help and error

        return main(["predict", *argv])
    from pathlib import Path

    return predict(argv[1:], bundle_dir=Path(argv[0]), prog="compress predict")


def run() -> int:
    try:
        if sys.argv[1:2] == ["predict"]:
            return _predict(sys.argv[2:])
        from compress.cli.main import main
    except KeyboardInterrupt:
        print("compress: interrupted while starting; nothing was done", file=sys.stderr, flush=True)
        return INTERRUPTED
    return main()


if __name__ == "__main__":
    raise SystemExit(run())
