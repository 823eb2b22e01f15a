"""ImageNet-pretrained VGG16 through torchvision's weights API, as the seeds start from it.

The seeds call `vgg16(pretrained=True)` and replace `classifier[6]`. Here the weights come
from torchvision's `VGG16_Weights.IMAGENET1K_V1` (or `VGG16_BN_Weights.IMAGENET1K_V1`) file
in the torch hub cache (`$TORCH_HOME/hub/checkpoints`), or from a file the user names; a
download happens only when asked for (`--download`), since most machines that run this
offline cannot reach the weights' host.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from compress.errors import CompressError
from compress.models import checkpoints, vgg
from compress.models.vgg import ModelSpec

IMAGENET = "imagenet"  # `--pretrained` with no path: torchvision's own weights file


def _weights(arch: str) -> object:
    from torchvision.models import VGG16_BN_Weights, VGG16_Weights

    return {"vgg16": VGG16_Weights.IMAGENET1K_V1, "vgg16_bn": VGG16_BN_Weights.IMAGENET1K_V1}[arch]


def hub_file(arch: str) -> Path:
    """Where torchvision keeps (and looks for) the ImageNet weights of `arch`."""
    url = _weights(arch).url  # type: ignore[attr-defined]
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def imagenet_state_dict(arch: str, source: str, download: bool) -> dict[str, torch.Tensor]:
    """The 1000-class ImageNet state dict of `arch`, from a named file or from torchvision's cache."""
    if source != IMAGENET:
        return checkpoints.state_dict_of(checkpoints.read_checkpoint(Path(source)), Path(source))
    path = hub_file(arch)
    if not path.exists() and not download:
        raise CompressError(f"--pretrained: no ImageNet weights for {arch} on this machine. Put torchvision's file "
                            f"{path.name} in {path.parent} (or set $TORCH_HOME), pass --pretrained PATH to a copy "
                            "you downloaded, or add --download to fetch it (needs internet)")
    try:
        return _weights(arch).get_state_dict(progress=False, weights_only=True)  # type: ignore[attr-defined]
    except OSError as exc:  # URLError and friends: no network
        raise CompressError(f"--pretrained --download could not fetch {path.name} ({exc}): this machine may be "
                            f"offline; copy the file into {path.parent} by hand") from None


def imagenet_vgg(arch: str, num_classes: int, state: dict[str, torch.Tensor], source: str) -> nn.Module:
    """torchvision's VGG with ImageNet weights and a fresh last layer for `num_classes` (the seeds' recipe)."""
    model = vgg.build(ModelSpec(arch=arch, num_classes=num_classes))
    own = model.state_dict()
    last = [k for k in own if k.startswith("classifier.6.")]
    body = {k: v for k, v in state.items() if k not in last}
    missing = sorted(set(own) - set(body) - set(last))
    wrong = [f"{k}: file {tuple(v.shape)} vs {arch} {tuple(own[k].shape)}" for k, v in body.items()
             if k in own and own[k].shape != v.shape]
    extra = sorted(set(body) - set(own))
    if missing or wrong or extra:
        detail = "; ".join(filter(None, [f"missing {missing[:3]}" if missing else "",
                                         f"shape mismatches {wrong[:2]}" if wrong else "",
                                         f"unexpected {extra[:3]}" if extra else ""]))
        raise CompressError(f"--pretrained {source}: not torchvision {arch} ImageNet weights ({detail})")
    model.load_state_dict(body, strict=False)
    return model


def freeze_features(model: nn.Module, frozen: bool) -> None:
    """Train the head only (seed 000 freezes the convolutions); undone after training."""
    for p in model.features.parameters():  # type: ignore[union-attr]
        p.requires_grad_(not frozen)
