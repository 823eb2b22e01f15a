"""PyTorch on the GPU: figures when there is a CUDA device, else n/a with the reason, never a made-up number.

Speed-ups are paired on the GPU as on the CPU (A B + B A blocks, each call synchronised); memory is
CUDA's max allocated per batch with the model alone on the device."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from compress.log import log
from compress.measuring.runtimes import torch_eager
from compress.measuring.runtimes._registry import register
from compress.measuring.timing import LatencyConfig
from compress.store.rows import Latency, Memory

if TYPE_CHECKING:
    from compress.measuring.subject import Measurement

TORCH_CUDA = "cuda"


def unavailable(cfg: LatencyConfig) -> str | None:
    """Why this run has no GPU figures, or None when it can time on CUDA."""
    if not cfg.on(TORCH_CUDA):
        return "n/a (not in --runtimes)"
    if not torch.cuda.is_available():
        return "n/a (no CUDA device on this machine)"
    return None


def synced(call: Callable[[], object]) -> Callable[[], object]:
    """One call that returns only once the GPU has finished it (CUDA kernels run asynchronously)."""
    def run() -> object:
        out = call()
        torch.cuda.synchronize()
        return out
    return run


def gpu_memory(model: nn.Module, input_shape: tuple[int, ...], batches: tuple[int, ...]) -> dict[int, Memory]:
    """torch.cuda.max_memory_allocated of one call per batch, with only this model on the GPU (its weights, the
    input and the activations; not the CUDA context or the caching allocator's reserve)."""
    out = {}
    for b in batches:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        call = torch_eager.torch_runner(model, input_shape, b, torch.device("cuda"))
        synced(call)()
        del call
        mib = torch.cuda.max_memory_allocated() / 2**20
        out[b] = Memory(b, round(mib, 1), round(mib, 1))
    return out


def gpu_latencies(model: nn.Module, input_shape: tuple[int, int, int],
                  cfg: LatencyConfig) -> tuple[dict[int, Latency], str, dict[int, Memory]]:
    """A model alone on the GPU: latency and memory per batch, or none with the reason; never a made-up number."""
    why = unavailable(cfg)
    if why:
        return {}, why, {}
    torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
    gpu_model = copy.deepcopy(model).cuda()
    try:
        out = {b: torch_eager.torch_latency(gpu_model, input_shape, b, torch.device("cuda"), cfg) for b in cfg.batches}
        return out, torch.cuda.get_device_name(0), gpu_memory(gpu_model, input_shape, cfg.batches)
    except torch.cuda.OutOfMemoryError:
        return {}, "n/a (CUDA out of memory)", {}
    finally:
        del gpu_model
        torch.cuda.empty_cache()


@register(TORCH_CUDA, "PyTorch (CUDA)", order=50, default=True, help="PyTorch on the GPU, when there is one",
          always=True)
def time_cuda(m: Measurement) -> None:
    """GPU figures of a model that runs on one, interleaved with its reference on the same GPU when there is one
    (as on the CPU); every row says why it has none (no GPU, not asked, CPU backend)."""
    art = m.subject.artifact
    m.timings.notes[TORCH_CUDA] = art.gpu_note or ""
    if art.module is None or art.gpu_note is not None:
        return
    why = unavailable(m.cfg)
    if why:
        m.timings.notes[TORCH_CUDA] = why
        return
    torch.backends.cudnn.benchmark = True
    cuda, shape = torch.device("cuda"), m.subject.shape
    on_gpu = {"model": copy.deepcopy(art.module).cuda()}  # copies: the CPU models stay where they are
    if m.pair is not None and m.pair.module is not None:
        on_gpu["reference"] = copy.deepcopy(m.pair.module).cuda()
    log(f"timing {m.subject.label} with PyTorch on CUDA" + m.against(on_gpu.get("reference")))
    try:
        m.time(TORCH_CUDA, lambda b: synced(torch_eager.torch_runner(on_gpu["model"], shape, b, cuda)),
               (lambda b: synced(torch_eager.torch_runner(on_gpu["reference"], shape, b, cuda)))
               if "reference" in on_gpu else None)
        on_gpu.pop("reference", None)  # the reference leaves the GPU before this model's memory is read
        torch.cuda.empty_cache()
        m.timings.memory[TORCH_CUDA] = gpu_memory(on_gpu["model"], shape, m.cfg.batches)
        m.timings.memory_notes[TORCH_CUDA] = "torch.cuda.max_memory_allocated (tensors, not the CUDA context)"
        m.timings.notes[TORCH_CUDA] = torch.cuda.get_device_name(0)
    except torch.cuda.OutOfMemoryError:
        m.timings.drop(TORCH_CUDA, "CUDA out of memory")
        m.timings.memory.pop(TORCH_CUDA, None)
    finally:
        on_gpu.clear()
        torch.cuda.empty_cache()
