from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compress.measuring.timing import LatencyConfig

# Two cores on CI: keep torch from oversubscribing them while tests run.
torch.set_num_threads(2)


@pytest.fixture
def quick_latency() -> LatencyConfig:
    """Enough calls to exercise the statistics, not enough to cost time."""
    return LatencyConfig(warmup=1, min_calls=3, max_calls=3, budget_s=0.0, batches=(1, 2), runtimes=("torch",))


QUICK_DATA = ["--max-samples", "80"]
# ONNX export + ORT timing is off here (it costs ~10 s per full-size model); the tests that check it turn it on.
QUICK_LATENCY = ["--latency-warmup", "1", "--latency-min-calls", "2", "--latency-max-calls", "2",
                 "--latency-budget-s", "0", "--latency-max-s", "0.001", "--latency-batches", "1,32",
                 "--runtimes", "torch"]
QUICK_CLI = [*QUICK_DATA, *QUICK_LATENCY, "--batch-size", "16"]


@pytest.fixture(autouse=True)
def _no_memory_probe(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The memory probe spawns a process per model and runtime (seconds each): off unless a test asks for it with
    @pytest.mark.memory_probe (tests/test_memory.py)."""
    if request.node.get_closest_marker("memory_probe") is None:
        from compress.measuring import harness

        monkeypatch.setattr(harness, "probe_memory", lambda m: None)


@pytest.fixture(autouse=True)
def _in_a_fresh_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own empty folder: a default like --reports-dir reports never lands in the checkout."""
    monkeypatch.chdir(tmp_path)
