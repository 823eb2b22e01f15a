"""Accuracy, loss and predictions of a model over a loader: what validation and scoring read."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from compress.scaleout import dist


@torch.inference_mode()
def _sums(model: nn.Module, loader: DataLoader, device: torch.device) -> list[float]:
    """[correct, summed cross-entropy, images] over a loader."""
    model.eval()
    correct, loss, n = 0, 0.0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        out = model(x)
        loss += nn.functional.cross_entropy(out, y, reduction="sum").item()
        correct += int((out.argmax(1) == y).sum())
        n += len(y)
    return [float(correct), loss, float(n)]


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) over a loader. Under torchrun each rank scores its share of the
    split and the sums are reduced, so every rank sees the same figures and picks the same best epoch."""
    correct, loss, n = dist.all_sum(_sums(model, dist.shard_eval(loader), device))
    return (correct / n, loss / n) if n else (float("nan"), float("nan"))


@torch.inference_mode()
def predict(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true labels over a loader, in loader order."""
    model.eval()
    preds, labels = [], []
    for x, y in loader:
        preds.append(model(x.to(device)).argmax(1).cpu())
        labels.append(y)
    return torch.cat(preds).numpy(), torch.cat(labels).numpy()


def accuracy(model: nn.Module, loader: DataLoader, device: torch.device) -> float:
    pred, true = predict(model, loader, device)
    return float((pred == true).mean()) if len(true) else float("nan")
