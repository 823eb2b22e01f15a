"""The report renders every column from stored rows, and McNemar's test gives the textbook values."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from compress.measuring import significance
from compress.measuring.runtimes.torch_eager import TORCH_CPU
from compress.reporting import markdown
from compress.store import rows
from compress.store.sqlite import Store
from tests.helpers import lat as _lat
from tests.helpers import report_rows as _rows


def test_mcnemar_matches_hand_computed_values() -> None:
    # b = 1 image only A gets right, c = 6 only B gets right: p = 2 * P(X <= 1 | n=7, 1/2) = 2 * 8/128
    a = np.array([1] + [0] * 6 + [1] * 30 + [0] * 3, dtype=bool)
    b = np.array([0] + [1] * 6 + [1] * 30 + [0] * 3, dtype=bool)
    t = significance.mcnemar(a, b)
    assert (t.only_a, t.only_b) == (1, 6) and t.p_value == pytest.approx(0.125) and not t.significant
    t = significance.mcnemar(np.zeros(10, bool), np.ones(10, bool))  # 0 vs 10: 2 / 1024
    assert t.p_value == pytest.approx(2 / 1024) and t.significant
    assert significance.mcnemar(np.ones(5, bool), np.ones(5, bool)).p_value == 1.0  # no disagreement
    assert significance.mcnemar(np.array([1, 0, 1, 0], bool), np.array([0, 1, 0, 1], bool)).p_value == 1.0  # 2 vs 2
    assert rows.decode(rows.encode(a)).tolist() == a.tolist()
    with pytest.raises(ValueError, match="same images"):
        significance.mcnemar(a, b[:-1])


def test_report_renders_every_column_and_section_from_synthetic_rows(tmp_path: Path) -> None:
    store = Store(tmp_path / "results.sqlite")
    for r in _rows():
        store.add(r)
    rows = store.rows("synthetic")  # through the store, as `compress report` reads them
    text = markdown.render("synthetic", rows, beside=markdown.Beside(run_all={
        "seconds": 3000, "command": "python -m compress run all", "finished": "now",
        "env": {"cpu": "test CPU", "threads": 2}}))
    full = text.split("## All models")[1]
    header = next(line for line in full.splitlines() if line.startswith("| model"))
    for col in ("params", "nonzero", "MACs (M)", "conv MACs (M)", "size (MB)", "torch b1 ms", "torch b32 ms", "ort b1 ms",
                "ort b32 ms", "cuda b1 ms", "cuda b32 ms", "top-1 %", "Δ top-1 (pts)", "McNemar p", "params ÷",
                "MACs ÷", "size ÷", "torch b32 speed-up", "ort b32 speed-up", "fine-tune epochs"):
        assert f" {col} " in header, col
    lines = full.split("\n## ")[0].splitlines()
    table = [ln for ln in lines if ln.startswith("| ") and not ln.startswith("| model") and "---" not in ln]
    assert table[0].startswith("| baseline")  # baseline first
    pruned = next(ln for ln in table if ln.startswith("| pruning"))
    assert "0.000 *" in pruned and "n/a" in pruned  # 38 vs 1 disagreements: significant; no GPU figure
    assert "The last complete `run all` took 50 minutes." in text and "(50.0 min of wall-clock time" in text
    assert "## int8 against its own fp32" in text and "(2.00x†)" in text  # † timed apart
    # 2 images only the KD student gets right, none the other way: p = 2 * (1/2)^2 = 0.5, not significant
    assert "KD gain +5.00 pts, KD beat the control (McNemar p = 0.500: within what this test set" in text
    assert "## Environment" in text and "abc1234" in text and "python -m compress run pruning" in text
    assert "PyTorch (CUDA) reads n/a for some rows: CPU int8 backend; no CUDA device." in text


def test_report_refuses_an_empty_store(tmp_path: Path) -> None:
    from compress.errors import CompressError

    with pytest.raises(CompressError, match="no stored results for dataset 'x'"):
        markdown.render("x", [])


def test_speedup_below_seventy_percent_of_the_macs_reduction_is_called_out() -> None:
    base, pruned = _rows()[:2]  # MACs 432.8M -> 211.0M (2.05x) but CPU b32 240 -> 174 ms (1.38x): 67% of theory
    fast = replace(pruned, row_id="r9-fast", config={"compressor": {"amount": 0.31}}, config_hash="ffff",
                   latency={TORCH_CPU: {32: _lat(120, 32)}})  # 2.00x: 98% of theory
    text = markdown.render("synthetic", [base, pruned, fast])
    assert "MACs ÷ 2.05, torch b32 speed-up 1.38x (67% of theory) — **below 70% of the theoretical speed-up**" in text
    line = next(ln for ln in text.splitlines() if "torch b32 speed-up 2.00x" in ln)
    assert "98% of theory" in line and "below" not in line


def test_seed_004_table_answers_each_method_with_its_default_row() -> None:
    from dataclasses import asdict

    from compress.compressors.pruning import PruningConfig

    base, pruned = _rows()[:2]
    default = replace(pruned, config={"compressor": json.loads(json.dumps(asdict(PruningConfig())))})
    other = replace(pruned, row_id="r8", config={"compressor": {**default.config["compressor"], "amount": 0.5}},
                    config_hash="gggg", params=1)
    text = markdown.render("synthetic", [base, default, other])
    section = text.split("## Seed 004's words")[1].split("\n## ")[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| Pruning")]
    assert len(rows) == 1 and "2.04x" in rows[0] and "2.05x" in rows[0]  # params ÷ and MACs ÷ of the default row
    assert "torch 1.38x" in rows[0] and "-2.5 " in rows[0]
    assert "| Quantization" not in section  # no default quantization row here: no line made up for it


def test_pareto_front_keeps_only_points_nothing_beats() -> None:
    from compress.reporting.plots import pareto

    pts = [(1.0, 90.0), (2.0, 95.0), (3.0, 94.0), (4.0, 97.0), (0.5, 80.0), (2.0, 93.0)]
    assert pareto(pts) == [(0.5, 80.0), (1.0, 90.0), (2.0, 95.0), (4.0, 97.0)]
