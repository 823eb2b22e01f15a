from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from compress.measure import Latency
from compress.results import ResultRow, Store


def _row(i: int, writer: int) -> ResultRow:
    lat = Latency(batch=1, median_ms=1.0, p90_ms=1.2, iqr_ms=0.1, calls=10)
    return ResultRow(
        row_id=f"w{writer}-{i}", created=f"2026-01-01T00:00:{i:02d}", dataset="digits", compressor="baseline",
        config={"i": i}, config_hash=str(i), baseline_row_id=None, model_path="m.pt", num_classes=10,
        image_size=32, params=1, nonzero_params=1, macs=1, size_bytes=1, cpu_b1=lat, cpu_b32=None, gpu_b1=None,
        gpu_b32=None, gpu_note="n/a", accuracy=0.5, accuracy_before_finetune=None, test_images=1, finetune_epochs=0,
        best_epoch=None, train_seconds=0.0, seed=0, env={}, command="test")


def _writer(path: str, writer: int, n: int) -> None:
    store = Store(Path(path))
    for i in range(n):
        store.add(_row(i, writer))


def test_two_processes_writing_at_once_lose_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), w, 40)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    rows = Store(path).rows()
    assert len(rows) == 80 and len({r.row_id for r in rows}) == 80


def test_rows_round_trip_with_nested_latency(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.sqlite")
    row = _row(1, 0)
    store.add(row)
    assert store.rows("digits") == [row] and store.rows("other") == [] and store.datasets() == ["digits"]
