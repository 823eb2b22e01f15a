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

from compress.errors import CompressError
from compress.store.atomic import atomic_open, write_json
from compress.store.rows import ResultRow


@dataclass
class Store:
    """Append-only SQLite store of result rows."""

    path: Path
    timeout_s: float = 60.0
    _schema: str = field(default="""CREATE TABLE IF NOT EXISTS rows (
        row_id TEXT PRIMARY KEY, dataset TEXT NOT NULL, compressor TEXT NOT NULL,
        created TEXT NOT NULL, payload TEXT NOT NULL)""", repr=False)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            con = sqlite3.connect(self.path, timeout=self.timeout_s)
            con.execute(self._schema)
        except sqlite3.DatabaseError as exc:
            raise CompressError(f"results store {self.path} cannot be opened ({exc}): move it aside; "
                                "every row is also kept as row.json in its run folder") from None
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
        except sqlite3.OperationalError as exc:
            if "full" in str(exc).lower():
                raise CompressError(f"the disk holding {self.path} is full ({_free(self.path)} free): free space "
                                    "there and run again; the rows already stored are intact") from None
            raise
        finally:
            con.close()

    def check(self) -> None:
        """Open an existing store once, so a damaged one is found before any work, not after it."""
        if self.path.exists():
            self._connect().close()

    def rows(self, dataset: str | None = None) -> list[ResultRow]:
        if not self.path.exists():
            return []
        con = self._connect()
        try:
            q = "SELECT row_id, payload FROM rows" + (" WHERE dataset = ?" if dataset else "") + \
                " ORDER BY created, row_id"
            found = _readable(con.execute(q, (dataset,) if dataset else ()).fetchall(), self.path)
            return [self.located(r) for r in found]
        finally:
            con.close()

    def datasets(self) -> list[str]:
        if not self.path.exists():
            return []
        con = self._connect()
        try:
            return [d for (d,) in con.execute("SELECT DISTINCT dataset FROM rows ORDER BY dataset")]
        finally:
            con.close()


def _free(path: Path) -> str:
    import shutil

    try:
        return f"{shutil.disk_usage(Path(path).parent).free / 1e6:.1f} MB"
    except OSError:
        return "unknown space"


def _readable(found: list[tuple[str, str]], path: Path) -> list[ResultRow]:
    """Every stored row that still parses; a damaged one is named and skipped, never a traceback."""
    import sys

    rows, bad = [], []
    for row_id, payload in found:
        try:
            rows.append(ResultRow.from_dict(json.loads(payload)))
        except (ValueError, TypeError, KeyError, AttributeError):
            bad.append(row_id)
    if bad:
        print(f"warning: skipped {len(bad)} damaged row(s) in {path}: {', '.join(bad[:5])}; each run folder keeps "
              "its row.json", file=sys.stderr)
    return rows


def save_run(store: Store, row: ResultRow, preds: np.ndarray | None, run_dir: Path) -> None:
    """row.json and the predictions beside the model, then the store: the store feeds the reports."""
    write_json(run_dir / "row.json", store.payload(row))
    if preds is not None:
        with atomic_open(run_dir / "predictions.npy", "wb") as fh:
            np.save(fh, preds)
    store.add(row)
