"""The input a model expects, from images in [0, 1]: ImageNet's statistics, (x - 0.5) / 0.5, 0-1, 0-255, Keras's
caffe mode, or the affine a Keras file's own preprocessing layers compute (models/keras_convert.py folds them).

Which mode a run uses is decided once, in `DataConfig` (data/datasets.py); this module only applies it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from compress.errors import CompressError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_BGR_MEANS = (103.939, 116.779, 123.68)  # keras.applications.imagenet_utils, mode "caffe"
AFFINE = "affine"  # affine(scale=[r,g,b],offset=[r,g,b]) on RGB 0-255: a Keras model's preprocessing layers, folded


def _parse_affine(mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    m = re.fullmatch(r"affine\(scale=\[([^\]]*)\],offset=\[([^\]]*)\]\)", mode)
    try:
        scale, offset = ([float(v) for v in part.split(",")] for part in m.groups())  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        raise CompressError(f"normalization {mode!r} is not affine(scale=[r,g,b],offset=[r,g,b])") from None
    if len(scale) != 3 or len(offset) != 3:
        raise CompressError(f"normalization {mode!r} needs three scales and three offsets (R, G, B)")
    if not all(map(math.isfinite, [*scale, *offset])) or 0.0 in scale:
        raise CompressError(f"normalization {mode!r} needs finite numbers and no zero scale")
    return torch.tensor(scale).view(3, 1, 1), torch.tensor(offset).view(3, 1, 1)


@dataclass(frozen=True)
class Normalizer:
    """Images in [0, 1] (C,H,W or N,C,H,W) as the model expects them; a class, so data loaders can pickle it."""

    mode: str

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "imagenet":
            shape = (3, 1, 1)
            return (x - torch.tensor(IMAGENET_MEAN).view(shape)) / torch.tensor(IMAGENET_STD).view(shape)
        if self.mode == "half":
            return (x - 0.5) / 0.5
        if self.mode == "unit":
            return x
        if self.mode == "raw":
            return x * 255.0
        if self.mode == "caffe":
            return x.flip(-3) * 255.0 - torch.tensor(CAFFE_BGR_MEANS).view(3, 1, 1)
        if self.mode.startswith(AFFINE):
            scale, offset = _parse_affine(self.mode)
            return x * 255.0 * scale + offset
        raise CompressError(f"unknown normalization {self.mode!r}")
