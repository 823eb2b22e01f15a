"""The report renders every column from stored rows, and McNemar's test gives the textbook values."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from compress.measuring import significance
from compress.measuring.runtimes.cuda import TORCH_CUDA
from compress.measuring.runtimes.onnx_runtime import ORT_CPU
from compress.measuring.runtimes.torch_eager import TORCH_CPU
from compress.reporting import markdown
from compress.store import rows
from compress.store.rows import Latency, ResultRow
from compress.store.sqlite import Store


def _lat(ms: float, batch: int) -> Latency:
    return Latency(batch=batch, median_ms=ms, p90_ms=ms * 1.05, iqr_ms=ms * 0.02, calls=20)


def _correct(n_right: int, n: int = 40) -> str:
    return "1" * n_right + "0" * (n - n_right)


BASE = ResultRow(
    row_id="r0-baseline", created="2026-11-23T00:00:00+00:00", dataset="synthetic", compressor="baseline",
    config={"arch": "vgg16"}, config_hash="aaaa", baseline_row_id=None, model_path="m.pt", num_classes=10,
    image_size=32, params=134_301_514, nonzero_params=134_301_514, macs=432_800_768, size_bytes=537_215_939,
    latency={TORCH_CPU: {1: _lat(30, 1), 32: _lat(240, 32)}, TORCH_CUDA: {1: _lat(0.9, 1), 32: _lat(1.4, 32)},
             ORT_CPU: {1: _lat(20, 1), 32: _lat(180, 32)}}, latency_notes={TORCH_CUDA: "NVIDIA H100"},
    accuracy=0.975, accuracy_before_finetune=None, test_images=40, finetune_epochs=0, best_epoch=9,
    train_seconds=700.0, seed=0, env={"cpu": "test CPU", "cpu_vnni": False, "threads": 2, "torch": "x",
                                      "dtype": "float32", "git_commit": "abc1234"},
    command="python -m compress baseline", onnx_size_bytes=537_000_000,
    onnx_parity=1e-6, conv_macs=313_000_000, correct=_correct(39))


def _rows() -> list[ResultRow]:
    pruned = replace(BASE, row_id="r1-pruning", compressor="pruning", config={"compressor": {"amount": 0.3}},
                     config_hash="bbbb", baseline_row_id=BASE.row_id, params=65_739_348, nonzero_params=65_739_348,
                     macs=211_000_000, size_bytes=263_000_000, accuracy=0.95,
                     latency={TORCH_CPU: {1: _lat(30, 1), 32: _lat(174, 32)}, ORT_CPU: BASE.latency[ORT_CPU]},
                     accuracy_before_finetune=0.19, finetune_epochs=6, command="python -m compress run pruning",
                     correct="0" * 38 + "1" * 2, latency_notes={TORCH_CUDA: "n/a (no CUDA device)"})
    int8 = replace(BASE, row_id="r2-quantization", compressor="quantization", config={"compressor": {}},
                   config_hash="cccc", baseline_row_id=BASE.row_id, source_row_id=BASE.row_id, size_bytes=134_500_000,
                   latency={ORT_CPU: {1: _lat(20, 1), 32: _lat(90, 32)}},
                   latency_notes={TORCH_CUDA: "n/a (CPU int8 backend)"}, backend="onnxruntime int8", env={**BASE.env, "dtype": "int8"},
                   accuracy=0.95, correct=_correct(38))
    control = replace(BASE, row_id="r3-control", compressor="distillation", config={"compressor": {"kd": False}},
                      config_hash="dddd", baseline_row_id=BASE.row_id, params=580_000, accuracy=0.90,
                      finetune_epochs=12, correct=_correct(36))
    kd = replace(control, row_id="r4-kd", config={"compressor": {"kd": True}}, config_hash="eeee", accuracy=0.95,
                 control_row_id=control.row_id, correct=_correct(38))
    return [BASE, pruned, int8, control, kd]


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
