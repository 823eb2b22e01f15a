"""How the CLI fails: one line naming the problem and the fix, a non-zero exit, nothing half-written.

A traceback tells a user where our code is, not what to change in their command.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from compress.errors import CompressError, printable

INTERRUPTED = 130
TERMINATED = 143  # 128 + SIGTERM: under torchrun, stopped because another rank failed


@dataclass
class Outcome:
    code: int = 0


def _say(msg: str) -> None:
    from compress.scaleout import dist

    world = dist.current()
    who = f" [rank {world.rank}/{world.size}]" if world.active else ""
    print(f"compress{who}: {printable(msg)}", file=sys.stderr, flush=True)


@contextmanager
def one_line_errors() -> Iterator[Outcome]:
    """Turn the errors a user can act on into one line and an exit code (kept in the yielded Outcome)."""
    outcome = Outcome()
    try:
        yield outcome
    except CompressError as exc:
        _say(f"error: {exc}")
        outcome.code = 2
    except Terminated:
        from compress.scaleout import dist

        if dist.current().active:  # torchrun stops the other ranks when one fails
            _say("stopped by torchrun (another process of this job failed, its message is above, or the job was "
                 "cancelled); stored results are intact (continue with --resume)")
            outcome.code = TERMINATED
        else:
            _say("interrupted; stored results are intact (an interrupted training continues with --resume)")
            outcome.code = INTERRUPTED
    except KeyboardInterrupt:
        _say("interrupted; stored results are intact (an interrupted training continues with --resume)")
        outcome.code = INTERRUPTED
    except MemoryError:
        _say("error: out of memory: lower --batch-size or --image-size, or use a machine with more memory; "
             "stored results are intact")
        outcome.code = 2
    except (RuntimeError, OSError) as exc:  # torch.cuda.OutOfMemoryError is a RuntimeError
        code = _known_failure(exc)
        if code is None:
            raise
        outcome.code = code


OOM_WORDS = ("out of memory", "can't allocate memory", "not enough memory", "failed to allocate", "bad_alloc")


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return seen


def _known_failure(exc: BaseException) -> int | None:
    """Interrupts, full disks and exhausted memory that reach us wrapped in another error: one line each."""
    chain = _chain(exc)
    text = " ".join(str(e) for e in chain).lower()
    if any(isinstance(e, KeyboardInterrupt) for e in chain) or "keyboardinterrupt" in text:
        _say("interrupted; stored results are intact (an interrupted training continues with --resume)")
        return INTERRUPTED
    full = next((e for e in chain if isinstance(e, OSError) and e.errno == errno.ENOSPC), None)
    if full is not None or "no space left" in text:
        where = getattr(full, "filename", None) or "the output folder"
        _say(f"error: no space left on the disk writing {where}: free space there (or pass --workdir on another "
             "disk) and run again; nothing half-written was kept and stored results are intact")
        return 2
    if _peer_gone(chain, text):
        _say("stopped: another process of this torchrun job failed or was stopped (its one-line message is "
             "above); stored results are intact")
        return 3
    if any(word in text for word in OOM_WORDS):
        gpu = "cuda" in text
        _say(f"error: {'the GPU' if gpu else 'the machine'} ran out of memory ({str(exc).splitlines()[0][:120]}): "
             f"lower --batch-size or --image-size{', or pass --device cpu' if gpu else ''}; stored results are intact")
        return 2
    denied = next((e for e in chain if isinstance(e, PermissionError)), None)
    if denied is not None:
        _say(f"error: cannot write {denied.filename or 'a file'}: permission denied ({denied.strerror}); make it "
             "writable (or pass --workdir / --reports-dir elsewhere); stored results are intact")
        return 2
    gone = next((e for e in chain if isinstance(e, FileNotFoundError)), None)
    if gone is not None:
        _say(f"error: {gone.filename or 'a file the run reads'} is gone (moved or deleted while the run used it): "
             "put it back and run again; an interrupted training continues with --resume")
        return 2
    return None


PEER_WORDS = ("connection closed by peer", "connection reset by peer", "broken pipe", "socket closed",
              "timed out", "nccl communicator was aborted")


def _peer_gone(chain: list[BaseException], text: str) -> bool:
    """A collective failed because another rank died: that rank says why; this one only says it stops."""
    from compress.scaleout import dist

    if not dist.current().active:
        return False
    import torch.distributed

    dist_error = getattr(torch.distributed, "DistError", ())
    return any(isinstance(e, dist_error) for e in chain) or any(w in text for w in PEER_WORDS)


def check_writable(targets: list[tuple[Any, str]]) -> None:
    """Output folders are checked before hours of training, not after."""
    for path, flag in targets:
        if path is None:
            continue
        try:
            Path(path).mkdir(parents=True, exist_ok=True)
            ok = os.access(path, os.W_OK)
        except OSError as exc:
            raise CompressError(f"{flag} {path} cannot be created ({exc.strerror}): pass a folder you can write to"
                                ) from None
        if not ok:
            raise CompressError(f"{flag} {path} is not writable: pass a folder you can write to")


_stopping = threading.Event()  # an error is being reported: a SIGTERM now (torchrun stopping the others) is moot


class Terminated(KeyboardInterrupt):
    """SIGTERM: unwinds like Ctrl-C; under torchrun it usually means another rank failed."""


def _raise_interrupt(signum: int, frame: Any) -> None:
    if not _stopping.is_set():
        raise Terminated


def terminate_as_interrupt() -> None:
    """SIGTERM (kill, a scheduler's timeout) unwinds like Ctrl-C: temporary files are cleaned up."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """terminate_as_interrupt for the length of a command, then the caller's handler again (library use)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.getsignal(signal.SIGTERM)
    terminate_as_interrupt()
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)
