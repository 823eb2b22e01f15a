"""The one harness every model goes through: theory (params, MACs) and measurement (size, latency).

MACs and nonzero parameters are theory: they say what the arithmetic could cost. Latency is
measured: it says what the arithmetic did cost on this machine. The two are kept in separate
columns because compressors that change the first need not change the second.
"""

from __future__ import annotations

import copy
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from compress.errors import CompressError
from compress.store.rows import Latency

IQR_WARN = 0.10  # as torch.utils.benchmark: IQR/median above this means the figure is noisy


MIN_TIMED = 5  # timed calls a figure has at least, whatever --latency-max-s says (unless --latency-min-calls is lower)


# The runtimes a row can be timed on; a row's latency is {runtime: {batch: Latency}}.
TORCH_CPU, ORT_CPU, TORCH_CUDA = "torch-cpu", "ort-cpu", "torch-cuda"


COMPILE_CPU, OPENVINO_CPU = "compile-cpu", "openvino-cpu"


RUNTIMES = (TORCH_CPU, COMPILE_CPU, ORT_CPU, OPENVINO_CPU, TORCH_CUDA)  # the order tables show them in


# --runtimes names -> row keys. The default keeps the cost of a run what it was before OpenVINO and
# torch.compile were added: compiling VGG16 with Inductor takes tens of seconds per batch size.
CHOICES = {"torch": TORCH_CPU, "compile": COMPILE_CPU, "ort": ORT_CPU, "openvino": OPENVINO_CPU, "cuda": TORCH_CUDA}


DEFAULT_RUNTIMES = ("torch", "ort", "cuda")


@dataclass(frozen=True)
class LatencyConfig:
    """How long to time each (device, batch) pair; enough calls that the median is stable."""

    warmup: int = 5
    min_calls: int = 20
    max_calls: int = 200
    budget_s: float = 3.0  # stop adding calls past this, once min_calls are in
    max_s: float = 30.0  # hard stop past this, once MIN_TIMED calls are in (a 224 px batch of 32 takes seconds)
    batches: tuple[int, ...] = (1, 32)
    threads: int | None = field(default=None, metadata={"flag": "--threads"})  # None: all cores; always recorded
    runtimes: tuple[str, ...] = field(default=DEFAULT_RUNTIMES, metadata={
        "flag": "--runtimes", "help": "where each model is timed: torch (PyTorch eager, CPU), compile (torch.compile "
                                      "with Inductor, CPU), ort (ONNX Runtime, CPU), openvino (OpenVINO, CPU), cuda "
                                      "(PyTorch on the GPU, when there is one); comma-separated"})
    require_quiet: bool = field(default=False, metadata={"flag": "--require-quiet"})  # wait for a quiet machine
    quiet_timeout_s: float = 60.0  # how long --require-quiet waits before it gives up

    def __post_init__(self) -> None:
        unknown = [r for r in self.runtimes if r not in CHOICES]
        if unknown or not self.runtimes:
            raise CompressError(f"--runtimes {','.join(self.runtimes)}: unknown runtime(s) {', '.join(unknown) or '(none given)'}"
                                f"; choose from {', '.join(CHOICES)}")
        if self.warmup < 0 or self.min_calls < 1 or self.max_calls < self.min_calls:
            raise CompressError("latency settings need warmup >= 0 and 1 <= min_calls <= max_calls")
        if self.threads is not None and self.threads < 1:
            raise CompressError(f"--threads must be >= 1, got {self.threads}")
        if self.threads is not None and self.threads > 1024:
            raise CompressError(f"--threads must be at most 1024, got {self.threads}")
        if not self.batches or min(self.batches) < 1:
            raise CompressError(f"--latency-batches must be positive batch sizes, got {self.batches}")
        if max(self.batches) > 65_536:
            raise CompressError(f"--latency-batches must be at most 65536, got {self.batches}")
        if self.max_calls > 100_000 or self.warmup > 10_000:
            raise CompressError("latency settings need --latency-max-calls <= 100000 and --latency-warmup <= 10000")
        if not (math.isfinite(self.budget_s) and self.budget_s >= 0):
            raise CompressError(f"--latency-budget-s must be >= 0, got {self.budget_s}")
        if not (math.isfinite(self.quiet_timeout_s) and self.quiet_timeout_s > 0):
            raise CompressError(f"--latency-quiet-timeout-s must be positive, got {self.quiet_timeout_s}")
        if not (math.isfinite(self.max_s) and self.max_s > 0):
            raise CompressError(f"--latency-max-s must be positive, got {self.max_s}")

    def on(self, runtime: str) -> bool:
        """Whether this run times `runtime` (a row key such as ORT_CPU)."""
        return any(CHOICES[r] == runtime for r in self.runtimes)

    @property
    def ort(self) -> bool:
        return self.on(ORT_CPU)

    @property
    def gpu(self) -> bool:
        return self.on(TORCH_CUDA)

    @property
    def onnx(self) -> bool:
        """Whether fp32 models need their parity-checked ONNX export (ONNX Runtime and OpenVINO read it)."""
        return self.on(ORT_CPU) or self.on(OPENVINO_CPU)


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def time_calls(fn: Callable[[], object], cfg: LatencyConfig, batch: int,
               sync: Callable[[], None] | None = None) -> Latency:
    """Untimed warm-up, then individually timed calls until min_calls and the budget are met.

    Slow calls (VGG16 at 224 px, batch 32: seconds each on a small CPU) cut both phases short:
    warm-up ends once it has used the budget (one call at least), and timing ends at `max_s`
    once MIN_TIMED calls are in, so one figure never takes minutes; `calls` records how many.
    """
    start = time.perf_counter()
    for i in range(cfg.warmup):
        fn()
        if sync:
            sync()
        if time.perf_counter() - start > cfg.budget_s:
            break
    times: list[float] = []
    start = time.perf_counter()
    deadline, hard_stop = start + cfg.budget_s, start + cfg.max_s
    while len(times) < cfg.max_calls and (len(times) < cfg.min_calls or time.perf_counter() < deadline):
        if len(times) >= min(MIN_TIMED, cfg.min_calls) and time.perf_counter() > hard_stop:
            break
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append((time.perf_counter() - t0) * 1e3)
    arr = np.asarray(times)
    q1, med, q3, p90 = np.percentile(arr, [25, 50, 75, 90])
    warning = None
    if med > 0 and (q3 - q1) / med > IQR_WARN:
        warning = f"noisy: IQR/median = {(q3 - q1) / med:.2f} > {IQR_WARN}"
    return Latency(batch, float(med), float(p90), float(q3 - q1), len(times), warning)


def torch_runner(model: nn.Module, input_shape: tuple[int, int, int], batch: int,
                 device: torch.device) -> Callable[[], torch.Tensor]:
    """One forward pass of model(x) in eval + inference mode; x allocated on the device beforehand.

    The harness times this callable and `pytest --benchmark-only` hands the same one to pytest-benchmark.
    """
    model = model.to(device).eval()
    x = torch.randn(batch, *input_shape, device=device)

    def run() -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    return run


def torch_latency(model: nn.Module, input_shape: tuple[int, int, int], batch: int, device: torch.device,
                  cfg: LatencyConfig) -> Latency:
    """Latency of model(x) in eval + inference mode."""
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    return time_calls(torch_runner(model, input_shape, batch, device), cfg, batch, sync)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """PyTorch's intra-op thread count fixed for a measurement (None: all cores), then restored."""
    chosen = threads or default_threads()
    before = torch.get_num_threads()
    torch.set_num_threads(chosen)
    try:
        yield chosen
    finally:
        torch.set_num_threads(before)


def pinning(threads: int | None) -> dict[str, object]:
    """How every CPU runtime is pinned, the same way for each: stated in every row."""
    chosen = threads or default_threads()
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"torch_intra_op_threads": chosen, "torch_inter_op_threads": torch.get_num_interop_threads(),
            "ort_intra_op_threads": chosen, "ort_inter_op_threads": 1, "ort_execution": "sequential",
            "cpu_affinity": affinity}


def gpu_latencies(model: nn.Module, input_shape: tuple[int, int, int],
                  cfg: LatencyConfig) -> tuple[dict[int, Latency], str]:
    """GPU figures, or none with the reason; never a made-up number."""
    if not cfg.gpu:
        return {}, "n/a (not in --runtimes)"
    if not torch.cuda.is_available():
        return {}, "n/a (no CUDA device on this machine)"
    torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
    gpu_model = copy.deepcopy(model)
    try:
        out = {b: torch_latency(gpu_model, input_shape, b, torch.device("cuda"), cfg) for b in cfg.batches}
    except torch.cuda.OutOfMemoryError:
        return {}, "n/a (CUDA out of memory)"
    finally:
        del gpu_model
        torch.cuda.empty_cache()
    return out, torch.cuda.get_device_name(0)


def count_params(model: nn.Module) -> tuple[int, int]:
    """Total and nonzero parameters (nonzero differs only after unstructured pruning)."""
    total = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    return total, nonzero


_MACS: dict[tuple[str, str, tuple[int, ...]], int] = {}  # (class, structure, input shape) -> MACs


def count_macs(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one image (thop; the unit torchvision calls "GFLOPS").

    MACs depend on the structure alone, never on the weights, so they are remembered per structure (the
    module tree's repr: every layer's type and sizes) and input shape: each invocation re-measures the
    baseline, and thop on a deep copy of VGG16 costs a second or two each time."""
    key = (f"{type(model).__module__}.{type(model).__qualname__}", repr(model), tuple(input_shape))
    if key not in _MACS:
        from thop import profile

        probe = copy.deepcopy(model).cpu().eval()  # thop attaches buffers and hooks; keep them off the real model
        with torch.no_grad():
            macs, _ = profile(probe, inputs=(torch.zeros(1, *input_shape),), verbose=False)
        _MACS[key] = int(macs)
    return _MACS[key]


def count_conv_macs(model: nn.Module, input_shape: tuple[int, int, int]) -> int | None:
    """MACs of `model.features` alone (the convolutions), where the model has that part."""
    features = getattr(model, "features", None)
    return count_macs(features, input_shape) if isinstance(features, nn.Module) else None


def count_flops(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """FLOPs (2 per MAC for conv/linear) from torch's own counter, used to cross-check thop."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.zeros(1, *input_shape))
    return int(counter.get_total_flops())


def file_size(path: Path) -> int:
    """Bytes on disk; an OpenVINO IR is its .xml and the .bin of weights beside it."""
    path = Path(path)
    weights = path.with_suffix(".bin")
    return path.stat().st_size + (weights.stat().st_size if path.suffix == ".xml" and weights.exists() else 0)
