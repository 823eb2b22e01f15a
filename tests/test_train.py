from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from compress.data import datasets
from compress.data.split import make_split
from compress.training.config import TrainConfig
from compress.training.evaluation import evaluate
from compress.training.loop import fit


def _loaders() -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    y = (x[:, 0] > 0).long()
    return (DataLoader(TensorDataset(x[:192], y[:192]), batch_size=32, shuffle=True, generator=g),
            DataLoader(TensorDataset(x[192:], y[192:]), batch_size=64))


def test_fit_learns_and_restores_the_best_validation_epoch() -> None:
    torch.manual_seed(0)
    train, val = _loaders()
    model = nn.Linear(8, 2)
    start_acc, _ = evaluate(model, val, torch.device("cpu"))
    result = fit(model, train, val, TrainConfig(epochs=6, lr=0.05), torch.device("cpu"))
    accs = [h["val_accuracy"] for h in result.history]
    assert result.best_val_accuracy == max([start_acc, *accs]) > 0.9
    assert result.best_epoch == 0 or accs[result.best_epoch - 1] == result.best_val_accuracy
    final_acc, _ = evaluate(model, val, torch.device("cpu"))
    assert final_acc == result.best_val_accuracy  # the weights of that epoch, not the last one


def test_zero_epochs_leaves_the_model_untouched() -> None:
    train, val = _loaders()
    model = nn.Linear(8, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, train, val, TrainConfig(epochs=0), torch.device("cpu"))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_split_is_deterministic_disjoint_and_stratified() -> None:
    cfg = datasets.DataConfig()
    bundle = datasets.load(cfg)
    a, b = make_split(bundle, cfg), make_split(bundle, cfg)
    assert a == b
    assert not (set(a.train) & set(a.val)) and not (set(a.train) & set(a.test)) and not (set(a.val) & set(a.test))
    assert len(a.train) + len(a.val) + len(a.test) == 1797 and len(a.test) == 359
    test_classes = torch.bincount(torch.tensor(bundle.train_targets[list(a.test)]))
    assert test_classes.min() >= 34  # ~36 per class: stratified, not luck
    assert make_split(bundle, datasets.DataConfig(seed=1)) != a


def test_shift_augmentation_only_touches_training_images() -> None:
    cfg = datasets.DataConfig(max_samples=60)
    bundle = datasets.load(cfg)
    split = make_split(bundle, cfg)
    torch.manual_seed(0)
    plain = datasets.loaders(bundle, split, 8)
    shifted = datasets.loaders(bundle, split, 8, augment=True)
    x_plain = torch.stack([plain.train.dataset[i][0] for i in range(8)])
    x_shift = torch.stack([shifted.train.dataset[i][0] for i in range(8)])
    assert x_shift.shape == x_plain.shape and not torch.equal(x_shift, x_plain)
    assert torch.equal(next(iter(plain.test))[0], next(iter(shifted.test))[0])
