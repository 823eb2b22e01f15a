"""Which layers can lose filters, and which layers break int8: per-layer sensitivity, on the validation split.

Pruning (Li et al. 2017, their Figure 2): each convolution alone loses its lowest-L1 filters at
each amount, no fine-tuning, and the validation accuracy is recorded. Removing a filter of a
VGG convolution is exactly zeroing it (its weights and bias, and its BatchNorm scale and shift
when there is one): the channel is 0 after the ReLU, so the next layer sees what it would see
with the channel removed (tests/test_sensitivity.py checks it against torch-pruning's model).
Zeroing needs no copy of the 537 MB model and no dependency graph per point, which is what
makes 13 layers x 9 amounts take 104 s on the 2-core dev box (digits, 144 validation images).

Quantization: ONNX Runtime's QDQ debugging API compares every layer's output in the int8 model
with the fp32 model's (SQNR: higher is closer), and for each layer a model where only that
layer is int8 is scored on the validation split.

Never the test split: the amounts chosen from a scan are then judged on the test split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from compress.errors import CompressError
from compress.log import log
from compress.sensitivity.scans import AMOUNTS, Curve, PruningScan
from compress.training.evaluation import accuracy

MAX_AMOUNT = 0.9  # no layer is emptied by a guided allocation


def convolutions(model: nn.Module) -> list[tuple[str, nn.Conv2d, nn.BatchNorm2d | None]]:
    """Each convolution of `model.features` in order, with the BatchNorm right after it if there is one."""
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential):
        raise CompressError("sensitivity needs a VGG-style model with a `features` sequence of convolutions")
    mods = list(features.named_children())
    out = []
    for i, (name, m) in enumerate(mods):
        if isinstance(m, nn.Conv2d):
            bn = mods[i + 1][1] if i + 1 < len(mods) and isinstance(mods[i + 1][1], nn.BatchNorm2d) else None
            out.append((f"features.{name}", m, bn))
    return out


def pruned_count(channels: int, amount: float) -> int:
    """Filters removed at `amount`: torch-pruning's count (keep int(n * (1 - amount)))."""
    return channels - int(channels * (1 - amount))


def lowest_l1(conv: nn.Conv2d) -> torch.Tensor:
    """Filter indices from the smallest L1 norm up (Li et al.; torch-pruning's MagnitudeImportance p=1)."""
    return conv.weight.detach().abs().flatten(1).sum(1).argsort()


class _Zeroed:
    """Zero some filters of one convolution for the duration of a `with`, then put them back exactly."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None, idx: torch.Tensor) -> None:
        self.params = [p for p in (conv.weight, conv.bias, *((bn.weight, bn.bias) if bn is not None else ()))
                       if p is not None]
        self.idx = idx

    def __enter__(self) -> None:
        self.saved = [p.detach()[self.idx].clone() for p in self.params]
        with torch.no_grad():
            for p in self.params:
                p[self.idx] = 0

    def __exit__(self, *exc: object) -> None:
        with torch.no_grad():
            for p, s in zip(self.params, self.saved):
                p[self.idx] = s


def scan_pruning(model: nn.Module, val: Any, device: torch.device, amounts: tuple[float, ...] = AMOUNTS,
                 progress: Callable[[str], None] = log) -> tuple[float, list[Curve]]:
    """Validation accuracy with each convolution alone pruned at each amount (no fine-tuning)."""
    model = model.to(device).eval()
    base = accuracy(model, val, device)
    curves = []
    for name, conv, bn in convolutions(model):
        order = lowest_l1(conv)
        accs = []
        for a in amounts:
            with _Zeroed(conv, bn, order[:pruned_count(conv.out_channels, a)]):
                accs.append(accuracy(model, val, device))
        curves.append(Curve(name, conv.out_channels, tuple(accs)))
        progress(f"sensitivity {name} ({conv.out_channels} filters): validation top-1 "
                 + " ".join(f"{100 * x:.1f}" for x in accs))
    return base, curves


@dataclass(frozen=True)
class Costs:
    """MACs of each convolution and linear layer of the unpruned model, to price an allocation without building it."""

    conv: tuple[int, ...]  # in x out x k x k x H x W of each conv
    linear: tuple[int, ...]  # in x out of each linear layer
    other: int  # the rest thop counts (pools, ...), unchanged by pruning
    widths: tuple[int, ...] = ()  # filters of each conv

    @classmethod
    def of(cls, model: nn.Module, image_size: int) -> "Costs":
        from compress.measuring.counting import count_macs

        conv_macs: list[int] = []

        def hook(m: nn.Conv2d, _: Any, out: torch.Tensor) -> None:
            kh, kw = m.kernel_size
            conv_macs.append(m.in_channels // m.groups * m.out_channels * kh * kw * out.shape[2] * out.shape[3])

        handles = [m.register_forward_hook(hook) for _, m, _ in convolutions(model)]
        try:
            with torch.no_grad():
                model.cpu().eval()(torch.zeros(1, 3, image_size, image_size))
        finally:
            for h in handles:
                h.remove()
        linear = [m.in_features * m.out_features for m in model.classifier.modules() if isinstance(m, nn.Linear)]
        total = count_macs(model, (3, image_size, image_size))
        widths = tuple(m.out_channels for _, m, _ in convolutions(model))
        return cls(tuple(conv_macs), tuple(linear), total - sum(conv_macs) - sum(linear), widths)

    def macs(self, conv_keep: list[float], hidden_keep: float) -> float:
        """MACs when conv i keeps `conv_keep[i]` of its filters and the hidden linear layers `hidden_keep`."""
        total, before = float(self.other), 1.0
        for cost, keep in zip(self.conv, conv_keep):
            total += cost * before * keep
            before = keep
        n = len(self.linear)
        for i, cost in enumerate(self.linear):
            k_in = before if i == 0 else hidden_keep
            k_out = 1.0 if i == n - 1 else hidden_keep
            total += cost * k_in * k_out
        return total


def _keep(channels: int, amount: float) -> float:
    return (channels - pruned_count(channels, amount)) / channels


def _amount_within(curve: Curve, amounts: tuple[float, ...], base: float, tolerance: float) -> float:
    """The largest amount (on a 0.01 grid, the curve read piecewise-linearly from (0, no drop)) within `tolerance`."""
    xs = np.array((0.0, *amounts))
    drops = np.array((0.0, *curve.drop(base)))
    grid = np.round(np.arange(0.0, min(MAX_AMOUNT, max(amounts)) + 1e-9, 0.01), 2)
    ok = np.interp(grid, xs, drops) <= tolerance
    # the first amount past the tolerance ends what is allowed, even if a larger one happens to score well
    first_bad = int(np.argmin(ok)) if not ok.all() else len(grid)
    return float(grid[first_bad - 1]) if first_bad > 0 else 0.0


def guided_amounts(scan: PruningScan, costs: Costs, target_amount: float, hidden_amount: float) -> dict[str, float]:
    """Per-layer amounts from the scan with (about) the MACs of uniform `target_amount` pruning.

    One tolerance for every layer, found by bisection: each layer gets the largest amount whose
    validation drop stays within it, so insensitive layers lose more and sensitive ones less
    (Li et al.'s VGG-16-pruned-A, made systematic); the tolerance is raised until the MACs
    reach those of uniform pruning at `target_amount` (the classifier's hidden units are pruned
    by `hidden_amount` in both).
    """
    channels = [c.channels for c in scan.curves]
    if len(channels) != len(costs.conv):
        raise CompressError(f"the sensitivity scan has {len(channels)} convolutions but the model has "
                            f"{len(costs.conv)}: run `compress sensitivity pruning` again for this baseline")
    if costs.widths and tuple(channels) != costs.widths:
        raise CompressError(f"the sensitivity scan was made on convolutions of {channels} filters but this model has "
                            f"{list(costs.widths)}: --per-layer sensitivity applies to the baseline it was scanned on")
    hidden_keep = 1.0 - hidden_amount
    target = costs.macs([_keep(n, target_amount) for n in channels], hidden_keep)

    def allocation(tol: float) -> dict[str, float]:
        return {c.layer: _amount_within(c, scan.amounts, scan.val_accuracy, tol) for c in scan.curves}

    def macs(alloc: dict[str, float]) -> float:
        return costs.macs([_keep(n, a) for n, a in zip(channels, alloc.values())], hidden_keep)

    low, high = 0.0, 100.0
    if macs(allocation(high)) > target:
        raise CompressError(f"even at {MAX_AMOUNT:.0%} in every layer the model keeps more MACs than uniform "
                            f"pruning at {target_amount}: use a smaller --amount with --per-layer sensitivity")
    for _ in range(40):  # bisection on the tolerance (points of validation accuracy)
        mid = (low + high) / 2
        if macs(allocation(mid)) > target:
            low = mid
        else:
            high = mid
    return allocation(high)
