from __future__ import annotations

import json
import multiprocessing as mp
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from compress.store.rows import ResultRow
from compress.store.sqlite import Store
from tests.helpers import store_row as _row


def _writer(path: str, writer: int, n: int, barrier: Any, spans: Any) -> None:
    store = Store(Path(path))
    barrier.wait()  # both processes are imported and ready: the writes start together
    spans[2 * writer] = time.time()
    for i in range(n):
        store.add(_row(i, writer))
    spans[2 * writer + 1] = time.time()


def test_two_processes_writing_at_once_lose_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    ctx = mp.get_context("spawn")
    barrier, spans = ctx.Barrier(2), ctx.Array("d", 4)
    procs = [ctx.Process(target=_writer, args=(str(path), w, 300, barrier, spans)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    assert max(spans[0], spans[2]) < min(spans[1], spans[3])  # the two writers really wrote at the same time
    rows = Store(path, timeout_s=1.0).rows()
    assert len(rows) == 600 and {r.row_id for r in rows} == {f"w{w}-{i}" for w in range(2) for i in range(300)}


def test_rows_round_trip_with_nested_latency(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.sqlite")
    row = _row(1, 0)
    store.add(row)  # model_path "m.pt" is relative to the cwd (tmp_path), read back against the store's folder
    assert store.rows("digits") == [replace(row, model_path=str(tmp_path / "m.pt"))] and store.rows("other") == [] and store.datasets() == ["digits"]


def test_rows_of_the_old_schema_load_keyed_by_runtime_and_batch() -> None:
    """Rows written before latency was keyed by runtime x batch (cpu_b1 ... ort_b32, gpu_note) still load."""
    old = _row(0, 0).to_dict()
    del old["latency"], old["latency_notes"]
    lat = {"batch": 32, "median_ms": 9.0, "p90_ms": 9.5, "iqr_ms": 0.2, "calls": 20, "warning": None}
    old.update(cpu_b1={**lat, "batch": 1}, cpu_b32=lat, gpu_b1=None, gpu_b32=None, gpu_note="n/a (no CUDA device)",
               ort_b1=None, ort_b32={**lat, "median_ms": 4.0}, ort_note="", compressor="depthwise",
               config={"compressor": {"distill": True, "head": "gap"}})
    row = ResultRow.from_dict(json.loads(json.dumps(old)))
    assert row.lat("torch", 1).batch == 1 and row.lat("torch", 32).median_ms == 9.0
    assert row.lat("ort", 32).median_ms == 4.0 and row.lat("ort", 1) is None
    assert "cuda" not in row.latency and row.note("cuda") == "n/a (no CUDA device)"
    assert row.config["compressor"] == {"kd": True, "head": "gap"}  # depthwise's switch is now --kd
    again = ResultRow.from_dict(json.loads(json.dumps(row.to_dict())))  # the new schema round-trips
    assert again == row


def test_a_copied_workdir_finds_its_own_model_files_not_the_originals(tmp_path: Path) -> None:
    import shutil

    from compress.errors import CompressError
    from compress.experiments.pipeline import find_row
    from compress.store.workspace import Workspace

    original = tmp_path / "original"
    (original / "digits" / "baseline" / "w0-0").mkdir(parents=True)
    model = original / "digits" / "baseline" / "w0-0" / "model.pt"
    model.write_bytes(b"stand-in")
    row = replace(_row(0, 0), model_path=str(model))
    Store(original / "results.sqlite").add(row)
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    shutil.rmtree(original)
    stored = json.loads(__import__("sqlite3").connect(copy / "results.sqlite")
                        .execute("SELECT payload FROM rows").fetchone()[0])
    assert stored["model_path"] == "digits/baseline/w0-0/model.pt"  # relative: nothing ties it to /original
    found = find_row(Workspace(copy), "w0-0", "digits")
    assert Path(found.model_path) == copy / "digits" / "baseline" / "w0-0" / "model.pt"
    (copy / "digits" / "baseline" / "w0-0" / "model.pt").unlink()
    try:
        find_row(Workspace(copy), "w0-0", "digits")
    except CompressError as exc:  # a missing file is one line naming it
        assert "is gone" in str(exc) and str(copy) in str(exc)
    else:
        raise AssertionError("a row whose model file is gone was accepted")


def test_a_model_outside_the_workdir_keeps_its_absolute_path(tmp_path: Path) -> None:
    row = replace(_row(0, 0), model_path=str(tmp_path / "elsewhere" / "best_model.pth"))
    store = Store(tmp_path / "runs" / "results.sqlite")
    store.add(row)
    assert store.rows()[0].model_path == str((tmp_path / "elsewhere" / "best_model.pth").resolve())


def _store_with_rows(path: Path, n: int = 40) -> Store:
    store = Store(path)
    for i in range(n):  # payloads of a few hundred bytes: the table spans many pages
        store.add(replace(_row(i, 0), command="x" * 400))
    return store


def test_a_damaged_page_is_found_before_any_work_and_nothing_is_appended(tmp_path: Path, monkeypatch: Any) -> None:
    """Hostile input: one damaged page (header intact). `report` died with sqlite3.DatabaseError and `run` went
    on and appended to it with exit 0; now both refuse in one line with the move-aside advice."""
    from compress.store import sqlite
    from tests.helpers import cli as _cli, one_line as _one_line

    path = tmp_path / "runs" / "results.sqlite"
    _store_with_rows(path)
    data = bytearray(path.read_bytes())
    page = 4096
    data[3 * page:4 * page] = bytes(range(256)) * (page // 256)  # page 4: a table page; page 1 (the header) intact
    path.write_bytes(bytes(data))
    before = path.read_bytes()
    monkeypatch.setattr(sqlite, "_CHECKED", set())  # as in a new process: this one checked the store when it wrote
    for argv in (["report", "--workdir", str(tmp_path / "runs")],
                 ["run", "slim-head", "--workdir", str(tmp_path / "runs"), "--max-samples", "40"]):
        code, _, err = _cli(argv)
        _one_line(code, err, f"the results store {path} is damaged")
        assert "move it aside" in err and "row.json" in err
    assert path.read_bytes() == before and not (tmp_path / "runs" / "baselines").exists()


def test_a_store_another_process_is_writing_is_busy_not_damaged(tmp_path: Path, monkeypatch: Any) -> None:
    """Wording: with another process holding the write lock, `report` advised moving the store aside."""
    import sqlite3

    from compress.store import sqlite
    from tests.helpers import cli as _cli, one_line as _one_line

    path = tmp_path / "runs" / "results.sqlite"
    _store_with_rows(path, 2)
    monkeypatch.setattr(sqlite, "LOCK_TIMEOUT_S", 0.2)
    monkeypatch.setattr(sqlite, "_CHECKED", set())
    holder = sqlite3.connect(path)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        code, _, err = _cli(["report", "--workdir", str(tmp_path / "runs"), "--reports-dir", str(tmp_path / "r")])
    finally:
        holder.rollback()
        holder.close()
    _one_line(code, err, "another process is writing the results store")
    assert "move it aside" not in err and "not damaged" in err


def test_report_on_a_workdir_that_does_not_exist_says_so_and_creates_nothing(tmp_path: Path) -> None:
    """Wording: it said the store "is empty" and made a reports folder."""
    from tests.helpers import cli as _cli, one_line as _one_line

    code, _, err = _cli(["report", "--workdir", str(tmp_path / "nope"), "--reports-dir", str(tmp_path / "reports")])
    _one_line(code, err, f"the workdir {tmp_path / 'nope'} does not exist")
    assert not (tmp_path / "reports").exists() and not (tmp_path / "nope").exists()


@pytest.mark.parametrize("edit, why", [
    (lambda d: d.pop("params"), "params is NoneType"),
    (lambda d: d.update(params="134M"), "params is str '134M', not int"),
    (lambda d: d.update(accuracy=7.5), "accuracy is 7.5, not a fraction from 0 to 1"),
    (lambda d: d.update(accuracy=float("nan")), "accuracy is nan, not a finite number"),
    (lambda d: d.update(correct="01x"), "holds characters other than 0 and 1"),
    (lambda d: d["latency"]["torch"]["1"].update(median_ms="fast"), "latency is dict"),
])
def test_a_row_of_the_wrong_type_is_named_and_skipped_and_the_rest_reported(edit: Any, why: str, tmp_path: Path,
                                                                            capsys: Any) -> None:
    """Hostile input: a row without `params` (or `params` a string) made `report` raise TypeError in the table
    code, and the workdir could not be reported at all; an accuracy of 7.5 read as 750.00%."""
    from compress.reporting import markdown

    store = Store(tmp_path / "results.sqlite")
    good = replace(_row(0, 0), correct="1", accuracy=1.0)
    store.add(good)
    bad = json.loads(json.dumps(store.payload(replace(good, row_id="bad-row", config_hash="b"))))
    bad["latency"] = {"torch": {"1": bad["latency"]["torch"]["1"]}}
    edit(bad)
    import sqlite3

    with sqlite3.connect(store.path) as con:
        con.execute("INSERT INTO rows VALUES (?, ?, ?, ?, ?)", ("bad-row", "digits", "baseline", bad["created"],
                                                                json.dumps(bad)))
    rows = store.rows()
    err = capsys.readouterr().err
    assert [r.row_id for r in rows] == [good.row_id] and "bad-row" in err and why in err, err
    markdown.write_report("digits", rows, tmp_path / "reports")  # the rest still reports


def test_a_row_stored_under_the_old_runtime_keys_reads_with_one_name_per_runtime() -> None:
    """Before each runtime had one name, rows were keyed `torch-cpu`, `ort-cpu`, ...: they read as `torch`, `ort`."""
    d = json.loads(json.dumps(_row(0, 0).to_dict()))
    d["latency"] = {"torch-cpu": d["latency"]["torch"], "ort-cpu": d["latency"]["torch"]}
    d["latency_notes"] = {"torch-cuda": "n/a (no CUDA device)", "openvino-cpu": "not asked"}
    d["memory"] = {"ort-cpu": {"1": {"batch": 1, "peak_mb": 400.0, "model_mb": 350.0}}}
    d["load"] = {"busy": False, "runtimes": {"ort-cpu": {"busy": True}}}
    row = ResultRow.from_dict(d)
    assert set(row.latency) == {"torch", "ort"} and row.lat("ort", 1).median_ms == 1.0
    assert row.note("cuda") == "n/a (no CUDA device)" and row.note("openvino") == "not asked"
    assert row.memory["ort"][1].peak_mb == 400.0 and row.busy_on("ort") and not row.busy_on("torch")
    assert ResultRow.from_dict(json.loads(json.dumps(row.to_dict()))) == row  # the new names round-trip as they are
