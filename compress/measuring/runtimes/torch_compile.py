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
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from compress.errors import CompressError, first_line
from compress.log import log
from compress.measuring.runtimes._registry import register
from compress.measuring.timing import torch_threads

if TYPE_CHECKING:
    from compress.measuring.subject import Measurement

COMPILE_CPU = "compile"

# Compile in this process: Inductor's default pool of compile workers would show up as "other processes
# using the CPU" in the load watch around the timings, and on 2 cores it competes with them.
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

PARITY_ATOL = 1e-3  # fp32: Inductor fuses and reorders float sums; far below a class flip
# fp16/bf16: eager and Inductor round each fused sum differently (bf16 keeps 8 bits of mantissa; measured: a
# bf16 depthwise net differed from eager by 0.0625), so half precision is checked relative to the
# logits' scale
HALF_RTOL = 0.05


def batch_of(images: torch.Tensor, batch: int) -> torch.Tensor:
    """`batch` real images (repeated when there are fewer): a batch size's graph is checked on real inputs."""
    reps = -(-batch // len(images))
    return images.repeat(reps, *([1] * (images.dim() - 1)))[:batch]


class Compiled:
    """One model compiled for the CPU; `runner(batch)` compiles that batch size on first use and times it."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, int, int]) -> None:
        self.eager = model.cpu().eval()
        self.shape = input_shape
        self.fn = torch.compile(self.eager, dynamic=False)
        self.compile_s: dict[int, float] = {}
        self.inputs: torch.Tensor | None = None  # real images: every batch size's graph is checked on them

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.fn(x)

    def check(self, inputs: torch.Tensor) -> float:
        """Compile for the parity batch, and refuse a compiled model that does not reproduce eager; the images
        are kept, so that each batch size's own graph (dynamic=False compiles one per size) is checked too."""
        self.inputs = inputs.float()
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
            raise CompressError(f"torch.compile failed ({type(exc).__name__}: {first_line(exc)})") from None
        self.compile_s[len(x)] = time.perf_counter() - t0
        return out

    def runner(self, batch: int) -> Callable[[], torch.Tensor]:
        x = torch.randn(batch, *self.shape)
        if batch not in self.compile_s:  # compiling is not latency; the graph that is timed is checked first
            if self.inputs is not None:
                self.check(batch_of(self.inputs, batch))
            else:
                self._first_call(x)
        return lambda: self._call(x)

    def note(self) -> str:
        spent = ", ".join(f"b{b} {s:.1f} s" for b, s in sorted(self.compile_s.items()))
        return f"compile time (not in the latency): {spent}"


@register(COMPILE_CPU, "torch.compile (Inductor, CPU)", order=20, help="torch.compile with Inductor, CPU")
def time_compiled(m: Measurement) -> None:
    """torch.compile (Inductor) on the CPU, parity-checked against eager; compile time in the notes, not the latency."""
    module = m.module
    if module is None:
        m.timings.notes[COMPILE_CPU] = f"n/a (the model is {m.subject.artifact.backend}, not a PyTorch module)"
        return
    reference = m.pair.module if m.pair is not None else None
    log(f"compiling {m.subject.label} with torch.compile (Inductor) and timing it on CPU"
        + m.against(reference, " (compiled too)"))
    try:
        with torch_threads(m.cfg.threads):
            cand = Compiled(module, m.subject.shape)
            cand.check(m.check_inputs())
            ref = Compiled(reference, m.subject.shape) if reference is not None else None
            m.time(COMPILE_CPU, cand.runner, ref.runner if ref else None)
        m.timings.notes[COMPILE_CPU] = cand.note()
    except CompressError as exc:
        m.timings.drop(COMPILE_CPU, str(exc))
    finally:
        torch._dynamo.reset()  # compiled graphs hold the model's weights; drop them with it
