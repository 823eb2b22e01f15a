"""Peak memory of inference: each model in a process of its own, so one model's high-water mark is not another's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from compress.measuring import memory
from tests.conftest import QUICK_LATENCY
from tests.helpers import cli as _cli
from tests.helpers import narrow as _narrow

pytestmark = pytest.mark.memory_probe


def _linear(path: Path, width: int) -> memory.Job:
    torch.save(torch.nn.Linear(width, width), path)
    return memory.Job(memory.torch_file, (path, 1, (width,)), (1, 4), ("torch",))


def test_each_model_gets_its_own_high_water_mark(tmp_path: Path) -> None:
    """A 64 MiB model measured beside a 1 KiB one: the small one reads its own peak, not the big one's (one
    process for both would give the small model the big one's mark, whatever the order)."""
    got = memory.measure({"big": _linear(tmp_path / "big.pt", 4096), "small": _linear(tmp_path / "small.pt", 16)})
    big, small = got["big"][0], got["small"][0]
    assert set(big) == {1, 4} and set(small) == {1, 4}
    # 4096^2 float32 = 64 MiB of weights; the small model's own figure is the runtime's working set, which varies
    # by host (13-21 MiB seen), so the bound is relative: a shared mark would give it the big one's 60+.
    assert big[1].model_mb >= 60 and small[4].model_mb < big[1].model_mb - 40, got
    assert big[1].peak_mb - big[1].model_mb == pytest.approx(small[1].peak_mb - small[1].model_mb, abs=40)
    assert "idle with the runtime imported" in got["big"][1]


def test_a_probe_that_fails_is_a_note_not_a_figure(tmp_path: Path) -> None:
    job = memory.Job(memory.torch_file, (tmp_path / "missing.pt", 1, (4,)), (1,), ("torch",))
    peaks, note = memory.measure({"x": job})["x"]
    assert peaks == {} and note.startswith("n/a (the memory probe failed: FileNotFoundError")


def test_a_measured_row_has_the_peak_memory_of_each_runtime(tmp_path: Path) -> None:
    """measure: PyTorch and ONNX Runtime each get a figure per timed batch (the larger batch never lower), the
    report's headline and full table show them; --no-memory stores none."""
    weights = _narrow(tmp_path / "n.pt")
    argv = ["measure", "--weights", str(weights), "--workdir", str(tmp_path / "runs"), "--json",
            *QUICK_LATENCY[:-1], "torch,ort"]
    code, out, err = _cli(argv)
    assert code == 0, err
    row = json.loads(out)[0]
    for runtime in ("torch", "ort"):
        b1, b32 = row["memory"][runtime]["1"], row["memory"][runtime]["32"]
        assert 0 < b1["model_mb"] < b1["peak_mb"] <= b32["peak_mb"], row["memory"]
    code, out, err = _cli([*argv, "--no-memory"])
    assert code == 0 and json.loads(out)[0]["memory"] == {}, err
