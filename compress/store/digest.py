"""File hashing: an imported baseline is cached, and a stored scan matched, by what a file holds, not its name."""

from __future__ import annotations

import functools
from pathlib import Path

from compress.deploy.bundle import sha256


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes: an imported baseline is cached by what it holds, not by its name."""
    st = Path(path).stat()
    return _digest(str(Path(path).resolve()), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _digest(path: str, mtime_ns: int, size: int) -> str:  # keyed by mtime and size: hashed once per version
    return sha256(Path(path))  # the reader bundles check their files with
