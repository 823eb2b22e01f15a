"""`--latency-batches` keeps every batch it timed, for every runtime, in the row and in the report."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from compress.cli.main import main
from compress.models import checkpoints, vgg
from compress.store.sqlite import Store
from tests.conftest import QUICK_DATA
from tests.helpers import NARROW


def test_three_batches_are_stored_and_reported(tmp_path: Path) -> None:
    weights = tmp_path / "narrow.pt"
    checkpoints.save_checkpoint(vgg.build(NARROW), NARROW, weights, extra={"image_size": 32})
    ws, reports = tmp_path / "runs", tmp_path / "reports"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["measure", "--weights", str(weights), "--dataset", "digits", *QUICK_DATA, "--store", "--json",
                     "--workdir", str(ws), "--latency-batches", "1,8,32", "--latency-warmup", "0",
                     "--latency-min-calls", "2", "--latency-max-calls", "2", "--latency-budget-s", "0",
                     "--runtimes", "torch,ort"])
    assert code == 0
    row = json.loads(out.getvalue())[0]
    for runtime in ("torch", "ort"):
        assert sorted(row["latency"][runtime]) == ["1", "32", "8"]
        assert row["latency"][runtime]["8"]["batch"] == 8 and row["latency"][runtime]["8"]["median_ms"] > 0
    stored = Store(ws / "results.sqlite").rows("digits")[0]
    assert sorted(stored.latency["ort"]) == [1, 8, 32]
    assert main(["report", "--workdir", str(ws), "--reports-dir", str(reports), "--report-batch", "8"]) == 0
    text = (reports / "digits.md").read_text()
    header = next(ln for ln in text.split("## All models")[1].splitlines() if ln.startswith("| model"))
    for col in ("torch b1 ms", "torch b8 ms", "torch b32 ms", "ort b1 ms", "ort b8 ms", "ort b32 ms", "ort b8 speed-up"):
        assert col in header
    assert "at batch 8" in text
