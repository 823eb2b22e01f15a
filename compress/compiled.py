"""torch.compile (Inductor) on the CPU as a runtime: compile time kept apart from latency.

Compiling is a one-off cost a deployment pays at start-up, so it is recorded per batch size in
the row's notes and never mixed into the latency. Each batch size is compiled with a static
shape (dynamic=False), the compiled model's output is checked against eager PyTorch on real
test images before it is timed, and a model Inductor cannot compile (no C++ compiler, an
unsupported op) gives `n/a` with the reason instead of failing the run.
"""

from __future__ import annotations

import os
import time
from typing import Callable

import torch
from torch import nn

from compress.errors import CompressError

# Compile in this process: Inductor's default pool of compile workers would show up as "other processes
# using the CPU" in the load watch around the timings, and on 2 cores it competes with them.
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

PARITY_ATOL = 1e-3  # fp32: Inductor fuses and reorders float sums; far below a class flip
# fp16/bf16: eager and Inductor round each fused sum differently (bf16 keeps 8 bits of mantissa; measured: a
# bf16 depthwise net differed from eager by 0.0625), so half precision is checked relative to the
# logits' scale
HALF_RTOL = 0.05


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


class Compiled:
    """One model compiled for the CPU; `runner(batch)` compiles that batch size on first use and times it."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, int, int]) -> None:
        self.eager = model.cpu().eval()
        self.shape = input_shape
        self.fn = torch.compile(self.eager, dynamic=False)
        self.compile_s: dict[int, float] = {}

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.fn(x)

    def check(self, inputs: torch.Tensor) -> float:
        """Compile for the parity batch, and refuse a compiled model that does not reproduce eager."""
        got = self._first_call(inputs.float())
        with torch.inference_mode():
            want = self.eager(inputs.float())
        diff = float((got.float() - want.float()).abs().max())
        half = any(p.dtype in (torch.float16, torch.bfloat16) for p in self.eager.parameters())
        limit = HALF_RTOL * float(want.float().abs().max()) if half else PARITY_ATOL
        if not diff <= limit:
            raise CompressError(f"torch.compile does not reproduce eager PyTorch: max difference {diff:.3g} "
                                f"above {limit:.3g}")
        return diff

    def _first_call(self, x: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        try:
            out = self._call(x)
        except CompressError:
            raise
        except Exception as exc:  # Inductor raises many types (BackendCompilerFailed, CalledProcessError, ...)
            raise CompressError(f"torch.compile failed ({type(exc).__name__}: {_first(exc)})") from None
        self.compile_s[len(x)] = time.perf_counter() - t0
        return out

    def runner(self, batch: int) -> Callable[[], torch.Tensor]:
        x = torch.randn(batch, *self.shape)
        if batch not in self.compile_s:
            self._first_call(x)  # compiling is not latency
        return lambda: self._call(x)

    def note(self) -> str:
        spent = ", ".join(f"b{b} {s:.1f} s" for b, s in sorted(self.compile_s.items()))
        return f"compile time (not in the latency): {spent}"
