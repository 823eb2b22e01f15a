"""Shared by tests/ and benchmarks/: plain `pytest` runs the benchmarks once each, as correctness tests."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Plain `pytest` runs the benchmark files once each, as correctness tests; timing is opt-in.

    `pytest --benchmark-only` (or --benchmark-enable / -json / -autosave / -compare) times them.
    pytest-benchmark configures itself last, so setting its option here is enough.
    """
    opt = config.option
    if not hasattr(opt, "benchmark_disable"):
        return
    timing = any(getattr(opt, name, None) for name in ("benchmark_only", "benchmark_enable", "benchmark_json",
                                                      "benchmark_autosave", "benchmark_compare", "benchmark_save"))
    if not timing:
        opt.benchmark_disable = True
