from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from compress.store.atomic import atomic_open, write_text


def test_written_file_has_normal_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "r.md", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.md").stat().st_mode) == 0o644


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "report.md"
    write_text(target, "old content")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as fh:
            fh.write("half of the new")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old content"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]
