from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from compress.data import datasets
from compress.data.split import loaders, make_split
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
    plain = loaders(bundle, split, 8)
    shifted = loaders(bundle, split, 8, augment=True)
    x_plain = torch.stack([plain.train.dataset[i][0] for i in range(8)])
    x_shift = torch.stack([shifted.train.dataset[i][0] for i in range(8)])
    assert x_shift.shape == x_plain.shape and not torch.equal(x_shift, x_plain)
    assert torch.equal(next(iter(plain.test))[0], next(iter(shifted.test))[0])


def _bundle(counts: dict[str, int]) -> datasets.DataBundle:
    targets = np.concatenate([np.full(n, c) for c, n in enumerate(counts.values())])
    pool = list(range(len(targets)))
    return datasets.DataBundle("t", list(counts), 32, "fp", pool, pool, targets, official_test=False)  # type: ignore[arg-type]


def test_every_class_gets_a_training_image_before_a_validation_image(tmp_path: Path, capsys: Any) -> None:
    """Silent wrong result: 300 images of `major` and 2 of `minor` put both of minor's in validation and test and
    none in training, with exit 0 and no word; a 1-image class went to test. Now a 2-image class gets one training
    and one test image, a 1-image class one training image, and the parts a class is missing from are named in one
    warning line each and in every row's caveats."""
    from compress.data.split import gaps
    from compress.experiments.baseline import stored_split
    from compress.store.workspace import Workspace

    bundle = _bundle({"major": 300, "minor": 2, "single": 1})
    split = make_split(bundle, datasets.DataConfig())
    t = bundle.train_targets
    for part, want in (("train", 1), ("val", 0), ("test", 1)):
        assert (t[list(getattr(split, part))] == 1).sum() == want, part
    assert (t[list(split.train)] == 2).sum() == 1 and not (t[list(split.test) + list(split.val)] == 2).any()
    assert gaps(split, bundle) == [
        "2 class(es) have no validation image (minor, single): the best epoch is chosen without them; add images "
        "to them",
        "1 class(es) have no test image (single): no figure says how well they are recognised; add images to them"]
    stored_split(Workspace(tmp_path), datasets.DataConfig(), bundle)
    warned = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert len(warned) == 2 and "minor, single" in warned[0]


def test_a_gap_note_names_five_classes_and_counts_the_rest() -> None:
    """720 classes without a validation image: five named, then how many more."""
    from compress.data.split import gaps

    bundle = _bundle({**{f"c{i:03d}": 2 for i in range(720)}, "big": 4000})
    notes = gaps(make_split(bundle, datasets.DataConfig()), bundle)
    assert notes[0].startswith("720 class(es) have no validation image (c000, c001, c002, c003, c004 and 715 more)")


def test_early_stopping_ends_after_the_patience_and_keeps_the_best_epoch(capsys: Any) -> None:
    """Validation labels that disagree with training ones: the best validation epoch comes early, and training
    ends `patience` epochs after it with that epoch's weights back; without patience it trains every epoch."""
    def data() -> tuple[DataLoader, DataLoader]:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(256, 8, generator=g)
        y = (x[:, 0] > 0).long()
        y_val = torch.where(torch.arange(64) % 2 == 0, 1 - y[192:], y[192:])  # half of them contradict training
        return (DataLoader(TensorDataset(x[:192], y[:192]), batch_size=32, shuffle=True, generator=g),
                DataLoader(TensorDataset(x[192:], y_val), batch_size=64))

    torch.manual_seed(0)
    full = fit(nn.Linear(8, 2), *data(), TrainConfig(epochs=12, lr=0.05, schedule="constant"), torch.device("cpu"))
    assert len(full.history) == 12 and full.stopped is None
    torch.manual_seed(0)
    model = nn.Linear(8, 2)
    train, val = data()
    early = fit(model, train, val, TrainConfig(epochs=12, lr=0.05, schedule="constant", patience=2),
                torch.device("cpu"))
    assert early.best_epoch == full.best_epoch < 10 and len(early.history) == early.best_epoch + 2
    assert f"stopped early after epoch {early.best_epoch + 2} of 12" in (early.stopped or "")
    assert evaluate(model, val, torch.device("cpu"))[0] == early.best_val_accuracy
    assert "(patience 1/2)" in capsys.readouterr().err
