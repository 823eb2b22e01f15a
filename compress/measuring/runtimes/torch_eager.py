"""PyTorch eager on the CPU: the runtime the model was trained in, and the one that scores PyTorch models."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from torch import nn

from compress.log import log
from compress.measuring import memory
from compress.measuring.runtimes._registry import register
from compress.measuring.timing import LatencyConfig, default_threads, time_calls, torch_threads
from compress.store.rows import Latency
from compress.training.evaluation import predict

if TYPE_CHECKING:
    from compress.measuring.subject import Measurement

TORCH_CPU = "torch"


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


def _score(m: Measurement) -> tuple[np.ndarray, np.ndarray]:
    """A PyTorch model scores itself: on the training device, or on the CPU when it is a CPU-only backend."""
    module = m.module
    assert module is not None
    run_on = m.device if m.subject.artifact.gpu_note is None else torch.device("cpu")
    try:
        return predict(module.to(run_on), m.test_loader, run_on)
    finally:
        module.cpu()


def _memory(m: Measurement) -> memory.Job | None:
    """The module saved whole into the measurement's scratch folder, loaded by a child (measuring/memory.py)."""
    if m.module is None:
        return None
    path = m.scratch / "memory-torch.pt"
    torch.save(m.module.cpu(), path)
    return memory.Job(memory.torch_file, (path, m.cfg.threads or default_threads(), m.subject.shape), m.cfg.batches,
                      ("torch",))


@register(TORCH_CPU, "PyTorch eager (CPU)", order=10, default=True, help="PyTorch eager, CPU",
          score=_score, scores=lambda artifact: artifact.module is not None, memory=_memory)
def time_eager(m: Measurement) -> None:
    """PyTorch eager on the CPU, interleaved with the reference's eager model when there is one."""
    module = m.module
    if module is None:
        return
    ref = m.pair.module if m.pair is not None else None
    log(f"timing {m.subject.label} with PyTorch on CPU (batches {', '.join(map(str, m.cfg.batches))}{m.against(ref)})")
    cpu, shape = torch.device("cpu"), m.subject.shape
    with torch_threads(m.cfg.threads):
        m.time(TORCH_CPU, lambda b: torch_runner(module, shape, b, cpu),
               (lambda b: torch_runner(ref, shape, b, cpu)) if ref is not None else None)
    if ref is not None:
        ref.cpu()
