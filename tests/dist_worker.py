"""Launched by tests/test_distributed.py, under torchrun or plainly: training steps of a tiny model
through compress.training.loop.fit (one step per epoch), the weights saved by rank 0. Modes: `train`
(2 epochs); `fail` (rank 1 raises while rank 0 goes on into the training's collectives);
`whole`, `cut` and `resume` (3 epochs with an epoch checkpoint: uninterrupted, interrupted on
every rank at the start of epoch 2, and continued with resume=True); `bn` (a BatchNorm model, no
dropout, 4 global batches of 8 per epoch, 2 epochs, validation on; the saved state includes the
running statistics); `nan` (rank 1's images hold a NaN: its loss is NaN at the first step)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from compress.cli.faults import one_line_errors, sigterm_as_interrupt
from compress.errors import CompressError
from compress.scaleout import dist
from compress.training.config import TrainConfig
from compress.training.loop import FitOptions, fit


class Interrupting:
    """A training loader that stops the run (as Ctrl-C would) before its `after`-th batch."""

    def __init__(self, loader: DataLoader, after: int) -> None:
        self.loader, self.after, self.seen = loader, after, 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):  # type: ignore[no-untyped-def]
        for batch in self.loader:
            if self.seen == self.after:
                raise KeyboardInterrupt
            self.seen += 1
            yield batch


def batchnorm(out: str, device: torch.device) -> None:
    torch.manual_seed(0)
    # no bias before BatchNorm: it cannot change the function, its gradient is float noise, and Adam would turn
    # that noise into steps of size lr that differ with N (vgg16_bn has such biases: they differ, harmlessly)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 3))
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 3, (40,), generator=g)
    images = torch.randn(40, 3, 8, 8, generator=g) * 2 + 1
    images[torch.arange(40), labels] += 2.0  # learnable: the label's channel is the brightest (epoch 0 is beaten)
    train = DataLoader(TensorDataset(images[:32], labels[:32]), batch_size=8, shuffle=True,
                       generator=torch.Generator().manual_seed(0))
    val = DataLoader(TensorDataset(images[32:], labels[32:]), batch_size=8)
    fit(model, train, val, TrainConfig(epochs=2, lr=0.05, batch_size=8, schedule="constant"), device)
    if dist.current().main:
        torch.save(model.state_dict(), out)


def main(out: str, mode: str) -> int:
    with sigterm_as_interrupt(), one_line_errors() as outcome:
        device = dist.start("cpu")
        if mode == "bn":
            batchnorm(out, device)
            dist.stop()
            return 0
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
        g = torch.Generator().manual_seed(1)
        images, labels = torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 3, (16,), generator=g)
        train = DataLoader(TensorDataset(images, labels), batch_size=16, shuffle=True,
                           generator=torch.Generator().manual_seed(0))
        val = DataLoader(TensorDataset(images[:0], labels[:0]), batch_size=8)  # empty: the last epoch is kept
        if mode == "fail" and dist.current().rank == 1:
            raise CompressError("rank 1 failed on purpose")
        if mode == "nan" and dist.current().rank == 1:
            images[:, 0, 0, 0] = float("nan")  # in place: the training loader holds this tensor
        epochs = 3 if mode in ("whole", "cut", "resume") else 2
        checkpoint = Path(out).with_name("resume.pt") if epochs == 3 else None
        fit(model, Interrupting(train, 1) if mode == "cut" else train, val,
            TrainConfig(epochs=epochs, lr=0.05, batch_size=16, schedule="constant"), device,
            FitOptions(checkpoint=checkpoint, resume=mode == "resume"))
        if dist.current().main:
            torch.save(model.state_dict(), out)
        dist.stop()
    return outcome.code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "train"))
