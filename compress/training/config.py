"""Training settings as typed configs: their fields are the command line's training flags."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from compress.errors import CompressError

MAX_EPOCHS, MAX_BATCH = 10_000, 65_536  # past these a flag is a typo, not a plan
BASELINE_PATIENCE = 3  # epochs without a better validation epoch before the baseline's training stops


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser settings; defaults follow the seeds (Adam, lr 1e-4, batch 32)."""

    epochs: int = 14
    lr: float = 1e-4
    batch_size: int = 32
    weight_decay: float = 0.0
    schedule: Literal["cosine", "constant"] = "cosine"
    augment: bool = False  # random shifts of training images (datasets.Shifted)
    # stop when this many epochs pass without a better validation epoch (the best-epoch rule); None: never. The
    # baseline's guard only (--baseline-patience): fine-tunes are compared at equal budgets. Not a flag here.
    patience: int | None = field(default=None, metadata={"cli": False})

    def __post_init__(self) -> None:
        if self.patience is not None and self.patience < 1:
            raise CompressError(f"--baseline-patience must be at least 1 epoch, got {self.patience}")
        if self.epochs < 0:
            raise CompressError(f"--epochs must be >= 0, got {self.epochs}")
        if self.epochs > MAX_EPOCHS:
            raise CompressError(f"--epochs must be at most {MAX_EPOCHS}, got {self.epochs}")
        if self.batch_size <= 0:
            raise CompressError(f"--batch-size must be positive, got {self.batch_size}")
        if self.batch_size > MAX_BATCH:
            raise CompressError(f"--batch-size must be at most {MAX_BATCH}, got {self.batch_size}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise CompressError(f"--lr must be positive, got {self.lr}")
        if self.lr > 10:
            raise CompressError(f"--lr must be at most 10, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise CompressError(f"--weight-decay must be >= 0, got {self.weight_decay}")


@dataclass(frozen=True)
class FinetuneConfig(TrainConfig):
    """Training after compression: the seeds' optimiser, fewer epochs (each compressor sets its own)."""

    epochs: int = 3
    # --freeze-features on a compressor that changes only the head: the convolutions stay as the baseline's and the
    # head trains on their outputs, computed once (training/cached.py). Set by the command line, not a flag of its own.
    freeze_features: bool = field(default=False, metadata={"cli": False})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.freeze_features and self.augment:
            raise CompressError("--freeze-features caches each image's features once, but --augment changes the "
                                "images every epoch: drop one of them")
