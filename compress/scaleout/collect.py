"""`compress collect DIR...`: merge the rows of several workdirs (sweep shards, array tasks) into one store.

Each shard of a sweep writes to a workdir of its own, so no SQLite file is ever written by two
machines: SQLite's locking is unreliable on network file systems (NFS, Lustre, GPFS), where two
writers can corrupt the file. Collecting afterwards is idempotent (rows are keyed by row id), and
refuses a row whose baseline is not the baseline the merged store already holds for the same
recipe: speed-ups and McNemar tests against two different baselines are not comparable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection

from compress.errors import CompressError, printable
from compress.store.digest import file_digest
from compress.store.rows import ResultRow, decode
from compress.store.workspace import Workspace


@dataclass
class Collected:
    added: list[str] = field(default_factory=list)  # row ids
    present: int = 0  # rows the store had already (collecting twice adds nothing)
    refused: list[str] = field(default_factory=list)  # one reason per refused baseline and its rows


def _weights(row: ResultRow) -> str | None:
    path = Path(row.model_path)
    return file_digest(path) if path.is_file() else None


def _recipe(row: ResultRow) -> tuple[str, str]:
    return row.dataset, row.config_hash


def _doubt(row: ResultRow, compressors: Collection[str]) -> str | None:
    """Why a shard's row cannot be trusted as it is stored, or None: an unknown compressor (an edited name),
    an accuracy its own per-image record does not give, a model file that is gone."""
    if row.compressor != "baseline" and row.compressor not in compressors:
        return f"its compressor {row.compressor!r} is not one this version knows ({', '.join(sorted(compressors))})"
    if row.accuracy is not None and not row.correct:
        return (f"its accuracy {100 * row.accuracy:.2f}% cannot be checked: its per-image record (correct) is empty "
                "(every measured row keeps one): the row was edited or damaged")
    if row.accuracy is None and row.correct:
        return "it has a per-image record but no accuracy: the row was edited or damaged"
    if row.accuracy is not None and row.correct:
        try:
            recorded = float(decode(row.correct).mean())
        except (ValueError, TypeError):
            return "its per-image record is damaged"
        if not abs(recorded - row.accuracy) <= 1e-9 or len(row.correct) != row.test_images:
            return (f"its accuracy {100 * row.accuracy:.2f}% is not what its per-image record gives "
                    f"({100 * recorded:.2f}% on {len(row.correct)} images): the row was edited or damaged")
    if not Path(row.model_path).exists():
        return f"its model file {row.model_path} is gone"
    return None


def collect(dest: Workspace, sources: list[Path], compressors: Collection[str]) -> Collected:
    """Add every row of the sources' stores to `dest`'s store that it lacks (see the module's docstring); rows
    of compressors this version does not know, rows that contradict their own per-image record and rows whose
    model file is gone are refused, each with its reason."""
    stores = []
    for src in sources:
        store = Workspace(Path(src)).store
        if not store.path.is_file():
            raise CompressError(f"{src} has no results store ({store.path} not found): pass the --workdir of a "
                                "finished run or sweep shard")
        if store.path.resolve() == dest.store.path.resolve():
            raise CompressError(f"{src} is the destination workdir itself: pass the shards' workdirs only")
        stores.append(store)
    target = dest.store
    have = {r.row_id: r for r in target.rows()}
    known = {_recipe(r): d for r in have.values() if r.compressor == "baseline" and (d := _weights(r)) is not None}
    out = Collected()
    for store in stores:
        damaged: list[tuple[str, str]] = []
        rows = store.rows(bad=damaged)
        out.refused += [f"{store.root}: row {printable(i)} refused: it cannot be read as a row ({printable(why)})"
                        for i, why in damaged]
        banned: set[str] = {i for i, _ in damaged}  # a row whose baseline cannot be read is not collected either
        for b in (r for r in rows if r.compressor == "baseline"):
            digest = _weights(b)
            theirs = known.get(_recipe(b))
            if digest is None:
                reason = f"its model file {b.model_path} is gone, so it cannot be checked against the others"
            elif theirs is not None and theirs != digest:
                reason = (f"its weights (sha256 {digest[:12]}) differ from the baseline already collected for the "
                          f"same recipe (sha256 {theirs[:12]}): train the baseline once and copy its folder into "
                          "every shard's workdir, or collect these into a separate workdir")
            else:
                known[_recipe(b)] = digest
                continue
            banned.add(b.row_id)
            n = sum(r.baseline_row_id == b.row_id for r in rows)
            out.refused.append(f"{store.root}: baseline {b.row_id} and its {n} row(s) refused: {reason}")
        for r in rows:
            if r.row_id in banned or r.baseline_row_id in banned:
                continue
            if r.row_id not in have and (why := _doubt(r, compressors)) is not None:
                out.refused.append(f"{store.root}: row {printable(r.row_id)} refused: {why}")
                continue
            if r.row_id in have:
                out.present += 1
                continue
            target.add(r)
            have[r.row_id] = r
            out.added.append(r.row_id)
    return out
