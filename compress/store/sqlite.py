"""The durable store: SQLite, one transaction per row.

A crash or Ctrl-C mid-run leaves the rows already written intact, and two runs writing at
once both land (SQLite serialises the writers).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from compress.errors import CompressError, printable
from compress.store.atomic import atomic_open, write_json
from compress.store.rows import ResultRow


LOCK_TIMEOUT_S = 60.0  # how long a reader or writer waits for another process's write to finish
_CHECKED: set[Path] = set()  # stores whose integrity this process has checked (once each: quick_check reads it all)


def _damaged(path: Path, why: str) -> CompressError:
    return CompressError(f"the results store {path} is damaged ({why}): move it aside (mv {path} {path}.damaged) "
                         "and run again; every row is also kept as row.json in its run folder, and nothing was "
                         "written to the damaged file")


def _failed(path: Path, exc: sqlite3.Error) -> CompressError:
    """One line for what SQLite says: a store another process is writing is busy, not damaged."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return CompressError(f"another process is writing the results store {path} (SQLite: {text}; waited "
                             f"{LOCK_TIMEOUT_S:.0f} s): let it finish, then run again; the store is not damaged")
    if isinstance(exc, sqlite3.OperationalError) and "full" in text.lower():
        return CompressError(f"the disk holding {path} is full ({_free(path)} free): free space there and run "
                             "again; the rows already stored are intact")
    return _damaged(path, text)


@dataclass
class Store:
    """Append-only SQLite store of result rows."""

    path: Path
    timeout_s: float | None = None  # None: LOCK_TIMEOUT_S
    _schema: str = field(default="""CREATE TABLE IF NOT EXISTS rows (
        row_id TEXT PRIMARY KEY, dataset TEXT NOT NULL, compressor TEXT NOT NULL,
        created TEXT NOT NULL, payload TEXT NOT NULL)""", repr=False)

    def _connect(self) -> sqlite3.Connection:
        """A connection to a store whose integrity was checked (PRAGMA quick_check, once per process): a damaged
        page is found before any work and before anything is appended to it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            con = sqlite3.connect(self.path, timeout=LOCK_TIMEOUT_S if self.timeout_s is None else self.timeout_s)
        except sqlite3.Error as exc:
            raise _failed(self.path, exc) from None
        try:
            key = self.path.resolve()
            if key not in _CHECKED and self.path.stat().st_size > 0:
                found = [r[0] for r in con.execute("PRAGMA quick_check").fetchall()]
                if found != ["ok"]:
                    raise _damaged(self.path, "; ".join(map(str, found[:2])))
            con.execute(self._schema)
            _CHECKED.add(key)
        except sqlite3.Error as exc:
            con.close()
            raise _failed(self.path, exc) from None
        except CompressError:
            con.close()
            raise
        return con

    @property
    def root(self) -> Path:
        """The workdir the store belongs to: model paths inside it are stored relative to it."""
        return self.path.parent

    def payload(self, row: ResultRow) -> dict[str, Any]:
        """The row as stored: its model path relative to the workdir, so a copied or moved workdir
        still finds its own files (an absolute path would silently load the original's)."""
        d = row.to_dict()
        try:
            d["model_path"] = Path(row.model_path).resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:  # a file outside the workdir (measure --weights elsewhere): kept absolute
            d["model_path"] = str(Path(row.model_path).resolve())
        return d

    def located(self, row: ResultRow) -> ResultRow:
        """The row with its model path resolved against this store's workdir."""
        p = Path(row.model_path)
        return row if p.is_absolute() else replace(row, model_path=str(self.root / p))

    def add(self, row: ResultRow) -> None:
        con = self._connect()
        try:
            with con:  # one transaction: the row is in or it is not
                con.execute("INSERT INTO rows VALUES (?, ?, ?, ?, ?)",
                            (row.row_id, row.dataset, row.compressor, row.created,
                             json.dumps(self.payload(row), default=str)))
        except sqlite3.IntegrityError:
            raise CompressError(f"a row {row.row_id} is already in {self.path}: row ids are unique") from None
        except sqlite3.Error as exc:
            raise _failed(self.path, exc) from None
        finally:
            con.close()

    def check(self) -> None:
        """Open an existing store once, so a damaged one is found before any work, not after it."""
        if self.path.exists():
            self._connect().close()

    def rows(self, dataset: str | None = None, bad: list[tuple[str, str]] | None = None) -> list[ResultRow]:
        """Every readable row (of one dataset); damaged ones are named on stderr and skipped, or handed back in
        `bad` as (row id, why) for a caller that reports them itself (collect)."""
        if not self.path.exists():
            return []
        con = self._connect()
        try:
            q = "SELECT row_id, payload FROM rows" + (" WHERE dataset = ?" if dataset else "") + \
                " ORDER BY created, row_id"
            try:
                fetched = con.execute(q, (dataset,) if dataset else ()).fetchall()
            except sqlite3.Error as exc:
                raise _failed(self.path, exc) from None
            return [self.located(r) for r in _readable(fetched, self.path, bad)]
        finally:
            con.close()

    def datasets(self) -> list[str]:
        if not self.path.exists():
            return []
        con = self._connect()
        try:
            return [d for (d,) in con.execute("SELECT DISTINCT dataset FROM rows ORDER BY dataset")]
        except sqlite3.Error as exc:
            raise _failed(self.path, exc) from None
        finally:
            con.close()


def _free(path: Path) -> str:
    import shutil

    try:
        return f"{shutil.disk_usage(Path(path).parent).free / 1e6:.1f} MB"
    except OSError:
        return "unknown space"


def parse(payload: str) -> ResultRow:
    """A stored row, checked (types, ranges: store.rows.invalid); ValueError naming what is wrong."""
    try:
        return ResultRow.from_dict(json.loads(payload))
    except (TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from None


def _readable(found: list[tuple[str, str]], path: Path, bad: list[tuple[str, str]] | None = None) -> list[ResultRow]:
    """Every stored row that still parses and checks; a damaged one is named and skipped (or, with `bad`, handed
    back with why), never a traceback."""
    import sys

    rows, skipped = [], []
    for row_id, payload in found:
        try:
            rows.append(parse(payload))
        except ValueError as exc:
            skipped.append((row_id, str(exc)))
    if bad is not None:
        bad += skipped
    elif skipped:
        named = "; ".join(f"{printable(i)} ({printable(why)[:120]})" for i, why in skipped[:5])
        print(f"warning: skipped {len(skipped)} damaged row(s) in {path}: {named}"
              f"{f' and {len(skipped) - 5} more' if len(skipped) > 5 else ''}; each run folder keeps its row.json",
              file=sys.stderr)
    return rows


def save_run(store: Store, row: ResultRow, preds: np.ndarray | None, run_dir: Path) -> None:
    """row.json and the predictions beside the model, then the store: the store feeds the reports."""
    write_json(run_dir / "row.json", store.payload(row))
    if preds is not None:  # Workspace.predictions names this file
        with atomic_open(run_dir / "predictions.npy", "wb") as fh:
            np.save(fh, preds)
    store.add(row)
