"""Atomic writes: a crash or Ctrl-C mid-write never leaves a half-written file in place."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

from compress.errors import CompressError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Write to a temporary file beside `path`, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; the result should look like any other file
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        written = Path(tmp).stat().st_size if Path(tmp).exists() else 0
        Path(tmp).unlink(missing_ok=True)
        if _disk_full(exc, path.parent):
            raise CompressError(
                f"no space left on the disk writing {path}: {written / 1e6:.1f} MB were written before it filled "
                f"({shutil.disk_usage(path.parent).free / 1e6:.1f} MB free now); free more than that there, or pass "
                f"--workdir on another disk. Nothing half-written was kept{' and the old file is intact' if path.exists() else ''}"
            ) from None
        raise


def _disk_full(exc: BaseException, folder: Path) -> bool:
    """ENOSPC, raised as itself or wrapped (torch.save reports it as a RuntimeError 'file write failed')."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return True
        seen = seen.__cause__ or seen.__context__
    text = str(exc).lower()
    try:
        nearly_full = shutil.disk_usage(folder).free < 64 * 1024 * 1024
    except OSError:
        nearly_full = False
    return "no space left" in text or ("write failed" in text and nearly_full)


STALE = re.compile(r"^\..+\.(\d+)\.[^.]+\.tmp$")  # .<name>.<writer pid>.<random>.tmp


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(root: Path, started: float) -> tuple[int, int]:
    """Remove what killed runs left under `root`: temporary files of writers that are gone, and epoch
    checkpoints no --resume can use (a best-epoch file without its resume.pt). Never a live run's file:
    a temporary file counts only when its writer's pid is dead, a best-epoch file only when the training
    that owns it (resume.owner) is gone.
    Returns (files, bytes) removed."""
    files = freed = 0
    if not Path(root).is_dir():
        return 0, 0
    for p in Path(root).rglob(".*.tmp"):
        m = STALE.match(p.name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            files, freed = files + 1, freed + _remove(p)
    for p in Path(root).rglob("resume.best.pt"):
        if p.with_name("resume.pt").exists():
            continue  # resumable: --resume needs it
        owner = p.with_name("resume.owner")
        try:
            live = _alive(int(owner.read_text().strip()))
        except (OSError, ValueError):  # no owner recorded (older versions): only if older than us
            live = p.stat().st_mtime >= started
        if not live:
            files, freed = files + 1, freed + _remove(p)
            owner.unlink(missing_ok=True)
    return files, freed


def _remove(p: Path) -> int:
    try:
        size = p.stat().st_size
        p.unlink()
        return size
    except OSError:
        return 0


def write_json(path: Path, obj: Any) -> None:
    with atomic_open(path) as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")


def write_text(path: Path, text: str) -> None:
    with atomic_open(path) as fh:
        fh.write(text)
