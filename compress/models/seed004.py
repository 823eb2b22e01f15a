"""Seed 004's hand-built VGG16 (`block1..block5` Sequential keys) read as torchvision's layout."""

from __future__ import annotations

import re

import torch

from compress.models.vgg import POOL_AFTER

SEED_KEY = re.compile(r"^block(\d+)\.(\d+)\.(weight|bias|running_mean|running_var|num_batches_tracked)$")


def _layer_order(keys: list[str], pattern: re.Pattern[str]) -> list[tuple[int, int]]:
    seen = sorted({(int(m.group(1)), int(m.group(2))) for k in keys if (m := pattern.match(k))})
    return seen


def to_torchvision(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map seed 004's block1..block5 / classifier.{0,2,4} names onto torchvision's by order."""
    layers = _layer_order(list(sd), SEED_KEY)
    bn = any(k.endswith("running_mean") for k in sd)
    # torchvision index of each conv (and its BN) in `features`
    tv_index: list[int] = []
    i = 0
    for c in range(13):
        tv_index.append(i)
        i += 3 if bn else 2
        if c in POOL_AFTER:
            i += 1
    convs = [(b, j) for (b, j) in layers if sd.get(f"block{b}.{j}.weight") is not None
             and sd[f"block{b}.{j}.weight"].dim() == 4]
    out: dict[str, torch.Tensor] = {}
    for n, (b, j) in enumerate(convs):
        if n >= 13:
            break
        for p in ("weight", "bias"):
            if f"block{b}.{j}.{p}" in sd:
                out[f"features.{tv_index[n]}.{p}"] = sd[f"block{b}.{j}.{p}"]
        if bn:
            for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                if f"block{b}.{j + 1}.{p}" in sd:
                    out[f"features.{tv_index[n] + 1}.{p}"] = sd[f"block{b}.{j + 1}.{p}"]
    linears = sorted({int(k.split(".")[1]) for k in sd if k.startswith("classifier.") and k.endswith("weight")})
    for n, j in enumerate(linears):
        for p in ("weight", "bias"):
            if f"classifier.{j}.{p}" in sd:
                out[f"classifier.{3 * n}.{p}"] = sd[f"classifier.{j}.{p}"]
    return out
