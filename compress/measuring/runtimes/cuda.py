"""PyTorch on the GPU: figures when there is a CUDA device, else n/a with the reason, never a made-up number."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
from torch import nn

from compress.measuring.runtimes import torch_eager
from compress.measuring.runtimes._registry import register
from compress.measuring.timing import LatencyConfig
from compress.store.rows import Latency, Memory

if TYPE_CHECKING:
    from compress.measuring.subject import Measurement

TORCH_CUDA = "torch-cuda"


def gpu_latencies(model: nn.Module, input_shape: tuple[int, int, int],
                  cfg: LatencyConfig) -> tuple[dict[int, Latency], str, dict[int, Memory]]:
    """GPU figures (latency, and CUDA's max allocated per batch), or none with the reason; never a made-up number."""
    if not cfg.on(TORCH_CUDA):
        return {}, "n/a (not in --runtimes)", {}
    if not torch.cuda.is_available():
        return {}, "n/a (no CUDA device on this machine)", {}
    torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
    out, peaks = {}, {}
    gpu_model = copy.deepcopy(model)
    try:
        for b in cfg.batches:
            torch.cuda.reset_peak_memory_stats()  # each batch's own high-water mark, the weights included
            out[b] = torch_eager.torch_latency(gpu_model, input_shape, b, torch.device("cuda"), cfg)
            mib = torch.cuda.max_memory_allocated() / 2**20
            peaks[b] = Memory(b, round(mib, 1), round(mib, 1))
    except torch.cuda.OutOfMemoryError:
        return {}, "n/a (CUDA out of memory)", {}
    finally:
        del gpu_model
        torch.cuda.empty_cache()
    return out, torch.cuda.get_device_name(0), peaks


@register(TORCH_CUDA, "cuda", "GPU", "PyTorch (CUDA)", order=50, default=True, help="PyTorch on the GPU, when there is one",
          always=True)
def time_cuda(m: Measurement) -> None:
    """GPU figures of a model that runs on one; every row says why it has none (no GPU, not asked, CPU backend)."""
    art = m.subject.artifact
    m.timings.notes[TORCH_CUDA] = art.gpu_note or ""
    if art.module is None or art.gpu_note is not None:
        return
    gpu, m.timings.notes[TORCH_CUDA], peaks = gpu_latencies(art.module, m.subject.shape, m.cfg)
    if gpu:
        m.timings.latency[TORCH_CUDA] = gpu
        m.timings.memory[TORCH_CUDA] = peaks
        m.timings.memory_notes[TORCH_CUDA] = "torch.cuda.max_memory_allocated (tensors, not the CUDA context)"
