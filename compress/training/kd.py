"""Knowledge distillation (Hinton et al. 2015): the loss and the teacher's logits.

The loss is alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T)).
The T^2 factor keeps the soft term's gradients on the same scale as T changes (Hinton, sec. 2).
Without augmentation the teacher sees the same images every epoch, so its logits are computed
once and kept beside the images: distillation then costs about what training the student costs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from compress.errors import CompressError

CACHE_LIMIT_BYTES = 2 * 1024**3  # above this, teacher logits are computed per batch instead of cached


@dataclass(frozen=True)
class KD:
    """Distillation settings shared by every compressor that can learn from the baseline."""

    temperature: float = 4.0
    alpha: float = 0.1  # weight of the hard-label cross-entropy; 1 - alpha goes to the soft term

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise CompressError(f"--temperature must be positive, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise CompressError(f"--alpha must be in [0, 1], got {self.alpha}")


O = TypeVar("O", bound="KDOptions")


@dataclass(frozen=True)
class KDOptions:
    """The distillation switch and its settings, shared by every compressor config that can learn
    from the baseline (inherit from it). `--kd` trains against the teacher; every such run is
    preceded by its control, the same config with `--no-kd`, so the KD gain is measured, not assumed.
    """

    kd: bool = field(default=False, metadata={
        "help": "learn from the baseline's soft outputs (KD loss); --no-kd trains on labels alone (the control)"})
    temperature: float = field(default=4.0, metadata={"help": "KD softening temperature T"})
    alpha: float = field(default=0.1, metadata={"help": "weight of the hard-label cross-entropy (1 - alpha: KD)"})

    def __post_init__(self) -> None:
        KD(self.temperature, self.alpha)  # validates

    @property
    def teacher(self) -> KD | None:
        """The KD settings when this run learns from the baseline, else None."""
        return KD(self.temperature, self.alpha) if self.kd else None

    def control(self: O) -> O | None:
        """The same run without the teacher: what the KD gain is measured against."""
        return replace(self, kd=False) if self.kd else None


def teacher_of(config: Any) -> KD | None:
    return config.teacher if isinstance(config, KDOptions) else None


def control_of(config: Any) -> Any:
    return config.control() if isinstance(config, KDOptions) else None


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, kd: KD) -> torch.Tensor:
    """Hinton et al. 2015, eq. in sec. 2: hard CE plus T^2-scaled KL on softened outputs."""
    t = kd.temperature
    soft = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1), reduction="batchmean",
                    log_target=True) * (t * t)
    hard = F.cross_entropy(student, labels)
    return kd.alpha * hard + (1.0 - kd.alpha) * soft


class _OnTheFly:
    """Yields (x, y, teacher(x)) per batch: for augmented data, where a cache would be stale."""

    def __init__(self, loader: DataLoader, teacher: nn.Module, device: torch.device) -> None:
        self.loader, self.teacher, self.device = loader, teacher, device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for x, y in self.loader:
            with torch.inference_mode():
                t = self.teacher(x.to(self.device)).cpu()
            yield x, y, t.clone()


def with_teacher(loader: DataLoader, teacher: nn.Module, device: torch.device, augment: bool) -> Any:
    """A training loader whose batches carry the teacher's logits as a third element."""
    teacher = teacher.to(device).eval()
    dataset = loader.dataset
    sample = dataset[0][0] if len(dataset) else None  # type: ignore[arg-type]
    too_big = sample is not None and len(dataset) * sample.numel() * 4 > CACHE_LIMIT_BYTES  # type: ignore[arg-type]
    if augment or too_big:
        return _OnTheFly(loader, teacher, device)
    xs, ys, ts = [], [], []
    ordered = DataLoader(dataset, batch_size=loader.batch_size or 32, shuffle=False)
    print(f"caching the teacher's logits for {len(dataset)} training images", file=sys.stderr)  # type: ignore[arg-type]
    with torch.inference_mode():
        for x, y in ordered:
            xs.append(x)
            ys.append(y)
            ts.append(teacher(x.to(device)).cpu())
    if not xs:
        raise CompressError("the training split is empty: nothing to distil")
    return DataLoader(TensorDataset(torch.cat(xs), torch.cat(ys), torch.cat(ts)),
                      batch_size=loader.batch_size or 32, shuffle=True, generator=loader.generator)
