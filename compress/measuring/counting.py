"""Theory: parameters, nonzero parameters and multiply-accumulates, read off a model's structure.

MACs and nonzero parameters say what the arithmetic could cost; they are kept apart from latency,
which is measured, because compressors that change the first need not change the second.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn


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
