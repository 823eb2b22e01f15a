"""The head trained on cached features is the head the whole network would have trained, in a fraction of the time."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from compress.models import vgg
from compress.training import cached
from compress.training.config import FinetuneConfig
from compress.training.loop import FitOptions, fit
from tests.conftest import QUICK_LATENCY
from tests.helpers import cli as _cli
from tests.helpers import narrow as _narrow
from tests.helpers import one_line as _one_line

BN = vgg.ModelSpec(arch="vgg16_bn", num_classes=3, conv_widths=(8,) * 13, hidden=(16, 16))  # BatchNorm and dropout


def _loaders() -> tuple[DataLoader, DataLoader]:
    data = torch.Generator().manual_seed(1)
    x, y = torch.randn(40, 3, 32, 32, generator=data), torch.randint(0, 3, (40,), generator=data)
    train = DataLoader(TensorDataset(x[:32], y[:32]), batch_size=8, shuffle=True,
                       generator=torch.Generator().manual_seed(0))
    return train, DataLoader(TensorDataset(x[32:], y[32:]), batch_size=8)


def test_cached_and_uncached_head_training_give_the_same_weights() -> None:
    """Same seed, two epochs, dropout in the head, BatchNorm in the convolutions: the same head within float
    tolerance, and the convolutions (their BatchNorm statistics included) untouched by either path."""
    torch.manual_seed(0)
    start = vgg.build(BN)
    whole, head = copy.deepcopy(start), copy.deepcopy(start)
    cfg = FinetuneConfig(epochs=2, lr=1e-3, freeze_features=True)
    for p in whole.features.parameters():
        p.requires_grad_(False)
    torch.manual_seed(5)
    fit(whole, *_loaders(), cfg, torch.device("cpu"), FitOptions("uncached", frozen=True))
    torch.manual_seed(5)
    result = cached.fit_head(head, *_loaders(), cfg, torch.device("cpu"), FitOptions("cached"))
    for (name, a), b in zip(whole.classifier.state_dict().items(), head.classifier.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), name
    assert not torch.equal(whole.classifier[0].weight, start.classifier[0].weight)  # it did train
    for key, value in start.features.state_dict().items():  # running_mean/var too: BatchNorm stayed in eval mode
        assert torch.equal(value, whole.features.state_dict()[key]) and torch.equal(value, head.features.state_dict()[key])
    assert 0 < result.cache_seconds <= result.seconds  # type: ignore[operator]
    assert all(p.requires_grad for p in head.features.parameters())  # unfrozen again for whatever comes next


def test_a_model_that_is_not_features_then_classifier_is_refused() -> None:
    class Odd(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features, self.classifier = torch.nn.Conv2d(3, 2, 3), torch.nn.Linear(2 * 30 * 30, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(torch.flatten(self.features(x) * 2, 1))

    from compress.errors import CompressError

    with pytest.raises(CompressError, match="cannot be trained on cached features"):
        cached.fit_head(Odd(), *_loaders(), FinetuneConfig(epochs=1), torch.device("cpu"), FitOptions())


def test_freeze_features_on_the_command_line(tmp_path: Path) -> None:
    """run slim-head --freeze-features: the row says the head trained on cached features and what each part cost;
    with --augment, or on a compressor that changes the convolutions, one line and exit 2."""
    weights = str(_narrow(tmp_path / "n.pt"))
    base = ["--baseline-weights", weights, "--max-samples", "80", "--workdir", str(tmp_path / "runs"), *QUICK_LATENCY]
    code, out, err = _cli(["run", "slim-head", "--freeze-features", "--epochs", "1", "--json", *base])
    assert code == 0, err
    row = json.loads(out)[-1]
    assert row["config"]["finetune"]["freeze_features"] is True
    assert any(c.startswith("head trained on cached features (convolutions frozen)") for c in row["caveats"])
    code, _, err = _cli(["run", "slim-head", "--freeze-features", "--augment", *base])
    _one_line(code, err, "--freeze-features caches each image's features once, but --augment")
    code, _, err = _cli(["run", "pruning", "--freeze-features", *base])
    _one_line(code, err, "--freeze-features trains the head alone, but pruning changes the convolutions too")
