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
from typing import IO, Any, Iterable, Iterator

from compress.errors import CompressError


def umask() -> int:
    """This process's file-creation mask (read by setting it and putting it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Write to a temporary file beside `path`, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600 files; the result should look like any other file
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
            wrote = f"{written / 1e6:.1f} MB were written before it filled" if written >= 100_000 else "it was full"
            raise CompressError(
                f"no space left on the disk writing {path}: {wrote} "
                f"({shutil.disk_usage(path.parent).free / 1e6:.1f} MB free now); free space there, or write to "
                f"another disk (--workdir for runs, --reports-dir for reports). Nothing half-written was kept"
                f"{' and the old file is intact' if path.exists() else ''}") from None
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


# .<name>.<writer pid>.<random>.tmp, where <name> is a file this tool writes (atomic_open's temporary name)
STALE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")
OURS = re.compile(r"^(model(\.[\w-]+)*\.(pt|onnx|xml|bin)|[\w.-]+\.json|predictions\.npy|resume(\.best)?\.pt)$")
TEMP_DIR = re.compile(r"^compress-[a-z0-9-]+?-(?P<pid>\d+)-")  # temporary folders under <workdir>/tmp


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(folders: Iterable[Path], run_folders: Iterable[Path], temp_root: Path,
                started: float) -> tuple[int, int]:
    """Remove what killed runs left in the tool's own folders, and only there: temporary files of writers that
    are gone (named after a file this tool writes), epoch checkpoints no --resume can use (a best-epoch file
    without its resume.pt, in a run or baseline folder), and temporary folders of dead processes under
    `temp_root`. Never a live run's file, and never a file the tool did not write: nothing is searched
    recursively. Returns (files, bytes) removed."""
    files = freed = 0
    for folder in folders:
        for p in _listing(folder, ".*.tmp"):
            m = STALE.match(p.name)
            if m and OURS.match(m["name"]) and int(m["pid"]) != os.getpid() and not _alive(int(m["pid"])):
                files, freed = files + 1, freed + _remove(p)
    for folder in run_folders:
        p = Path(folder) / "resume.best.pt"
        if not p.is_file() or p.with_name("resume.pt").exists():
            continue  # resumable: --resume needs it
        owner = p.with_name("resume.owner")
        try:
            live = _alive(int(owner.read_text().strip()))
        except (OSError, ValueError):  # no owner recorded (older versions): only if older than us
            live = p.stat().st_mtime >= started
        if not live:
            files, freed = files + 1, freed + _remove(p)
            owner.unlink(missing_ok=True)
    for d in _listing(temp_root, "compress-*"):
        m = TEMP_DIR.match(d.name)
        if d.is_dir() and not d.is_symlink() and m and int(m["pid"]) != os.getpid() and not _alive(int(m["pid"])):
            size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file() and not f.is_symlink())
            shutil.rmtree(d, ignore_errors=True)
            files, freed = files + 1, freed + size
    return files, freed


def _listing(folder: Path, pattern: str) -> list[Path]:
    try:
        return sorted(Path(folder).glob(pattern)) if Path(folder).is_dir() else []
    except OSError:
        return []


def _remove(p: Path) -> int:
    try:
        size = p.stat().st_size
        p.unlink()
        return size
    except OSError:
        return 0


def scratch_dir(root: Path | None, kind: str) -> tempfile.TemporaryDirectory[str]:
    """A temporary folder named after this process (`compress-<kind>-<pid>-...`), under `root` (the workdir's
    tmp/) when given: on the workdir's disk, removed on exit, and removed at the next start if we were killed."""
    if root is not None:
        Path(root).mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=f"compress-{kind}-{os.getpid()}-", dir=root)


def write_json(path: Path, obj: Any) -> None:
    with atomic_open(path) as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")


def write_text(path: Path, text: str) -> None:
    with atomic_open(path) as fh:
        fh.write(text)
