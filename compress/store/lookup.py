"""A stored row named the ways a user names it: its id, a unique prefix, its run folder, or the report's short
`compressor-hash` form, across every dataset in the workdir."""

from __future__ import annotations

from pathlib import Path

from compress.errors import CompressError, printable
from compress.store.rows import ResultRow
from compress.store.workspace import Workspace


def short(row: ResultRow) -> str:
    """The short form a report shows: `<compressor>-<first 6 of the config hash>` (the row id's tail)."""
    return f"{row.compressor}-{row.config_hash[:6]}"


def _matches(row: ResultRow, ref: str, as_dir: Path | None) -> bool:
    if row.row_id.startswith(ref) or row.row_id.endswith("-" + ref) or short(row) == ref:
        return True
    return as_dir is not None and Path(row.model_path).resolve().parent == as_dir


def resolve(ws: Workspace, ref: str) -> ResultRow:
    """The one stored row `ref` names; none or several: one line naming the candidates."""
    if not ws.store.path.is_file():
        raise CompressError(f"no results store in {ws.root}: pass the --workdir your runs wrote to (default ./runs)")
    rows = ws.store.rows()
    exact = [r for r in rows if r.row_id == ref]
    if exact:
        return exact[-1]
    as_dir = Path(ref).resolve() if Path(ref).is_dir() else None
    hits = {r.row_id: r for r in rows if ref and _matches(r, ref, as_dir)}
    if len(hits) == 1:
        return next(iter(hits.values()))
    if not hits:
        newest = ", ".join(f"{r.row_id} ({r.dataset})" for r in rows[-3:]) or "none yet"
        raise CompressError(f"no stored row is {printable(ref)!r} in {ws.root} (newest: {newest}): "
                            "`python -m compress rows` lists them with their ids")
    names = ", ".join(f"{i} ({hits[i].dataset})" for i in sorted(hits)[:5])
    raise CompressError(f"{printable(ref)!r} matches {len(hits)} rows ({names}{' ...' if len(hits) > 5 else ''}): "
                        "give more of the row id")
