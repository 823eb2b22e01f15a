"""The input a model expects, from images in [0, 1]: ImageNet's statistics, (x - 0.5) / 0.5, 0-1, 0-255, Keras's
caffe mode, or the affine a Keras file's own preprocessing layers compute (models/keras_convert.py folds them).

Which mode a run uses is decided once, in `DataConfig` (data/datasets.py); this module only applies it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compress.deploy.preprocess import AFFINE, CAFFE_BGR_MEANS, IMAGENET_MEAN, IMAGENET_STD, PreprocessError, parse_affine
from compress.errors import CompressError

__all__ = ["AFFINE", "CAFFE_BGR_MEANS", "IMAGENET_MEAN", "IMAGENET_STD", "Normalizer"]


def _parse_affine(mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        scale, offset = parse_affine(mode)  # one parser: the bundles' runner reads the same string
    except PreprocessError as exc:
        raise CompressError(str(exc)) from None
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
