"""The split every model is scored on: made once per data configuration (seeded, stratified, every class
held out), stored, and checked whenever it is read back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from compress.data.datasets import DataBundle, DataConfig, Shifted
from compress.errors import CompressError


@dataclass(frozen=True)
class Split:
    """Indices of train/val (into the training pool) and test (into the test pool)."""

    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]

    def to_dict(self) -> dict[str, list[int]]:
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, list[int]]) -> "Split":
        return cls(tuple(d["train"]), tuple(d["val"]), tuple(d["test"]))

    def problem(self, bundle: "DataBundle") -> str | None:
        """Why this (stored, possibly edited) split cannot be used with the data, or None: an index outside the
        data, an image in two parts, an empty training or test part."""
        n_train, n_test = len(bundle.train_targets), len(bundle.test_pool)  # type: ignore[arg-type]
        for part, top in (("train", n_train), ("val", n_train), ("test", n_test)):
            values = getattr(self, part)
            if any(not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < top for i in values):
                return f"its {part} part holds an index outside the {top} images there"
        if not self.train or not self.test:
            return "its train or test part is empty"
        if set(self.train) & set(self.val):
            return "an image is in both its train and validation parts"
        if not bundle.official_test and set(self.test) & (set(self.train) | set(self.val)):
            return "an image is in both its test part and its train or validation part"
        return None


def _split_off(idx: np.ndarray, targets: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified when every class has two members, plain seeded shuffle otherwise."""
    from sklearn.model_selection import train_test_split

    n_out = max(1, int(round(len(idx) * fraction)))
    if len(idx) - n_out < 1:
        raise CompressError(f"{len(idx)} image(s) are too few to split into train, validation and test: use a "
                            "folder with more images per class")
    labels = targets[idx]
    counts = np.bincount(labels)
    strat = labels if counts[counts > 0].min() >= 2 and n_out >= len(np.unique(labels)) else None
    keep, out = train_test_split(idx, test_size=n_out, random_state=seed, stratify=strat)
    keep, out = _every_class_kept(np.sort(keep), np.sort(out), targets, seed)
    if not len(out):
        raise CompressError(f"{len(idx)} image(s) in {len(np.unique(labels))} class(es) leave nothing to hold out once "
                            "every class has a training image: a class needs two images to be tested; add images")
    return _every_class_held_out(keep, out, targets, seed)


def _every_class_kept(keep: np.ndarray, out: np.ndarray, targets: np.ndarray,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Every class keeps an image on the training side before any goes out: a proportional split can put both of
    a 2-image class's images in validation and test, and a model is then scored on a class it never saw.
    Balanced data is left as it was split."""
    rng = np.random.default_rng(seed + 7)
    for c in np.unique(targets[out]):
        if not (targets[keep] == c).any():
            back = int(rng.choice(out[targets[out] == c]))
            out, keep = out[out != back], np.sort(np.append(keep, back))
    return keep, out


def _every_class_held_out(keep: np.ndarray, out: np.ndarray, targets: np.ndarray,
                          seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A class with two or more images keeps one in `out`: a proportional split can give a 2-image class none
    beside a 500-image one, and a class never tested reads as 100%. Balanced data is left as it was split."""
    rng = np.random.default_rng(seed)
    for c in np.unique(targets[keep]):
        mine = keep[targets[keep] == c]
        if len(mine) >= 2 and not (targets[out] == c).any():
            moved = int(rng.choice(mine))
            keep, out = keep[keep != moved], np.sort(np.append(out, moved))
    return keep, out


def _stratified_subset(pool: np.ndarray, targets: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """--max-samples: a seeded subset in which every class that has two images keeps two (a plain random
    subset can drop a small class entirely); images of the largest classes make room."""
    pick = np.sort(rng.choice(pool, size=size, replace=False))
    for c in np.unique(targets[pool]):
        have = pick[targets[pick] == c]
        others = np.setdiff1d(pool[targets[pool] == c], have)
        need = min(2, len(have) + len(others)) - len(have)
        if need <= 0 or size < 2 * len(np.unique(targets[pool])):
            continue
        counts = np.bincount(targets[pick])
        largest = pick[targets[pick] == int(np.argmax(counts))]
        pick = np.sort(np.concatenate([np.setdiff1d(pick, largest[-need:]), rng.choice(others, need, replace=False)]))
    return pick


def make_split(bundle: DataBundle, cfg: DataConfig) -> Split:
    """Deterministic in (data, seed, fractions): test 20%, validation from the rest."""
    rng = np.random.default_rng(cfg.seed)
    pool = np.arange(len(bundle.train_targets))
    if len(pool) < 3 and not bundle.official_test:
        raise CompressError(f"{len(pool)} image(s) are too few to split into train, validation and test: use a "
                            "folder with more images per class")
    if cfg.max_samples is not None and cfg.max_samples < len(pool):
        pool = _stratified_subset(pool, bundle.train_targets, cfg.max_samples, rng)
    if bundle.official_test:
        train_val = pool
        n_test = len(bundle.test_pool)  # type: ignore[arg-type]
        test = np.arange(n_test)
        if cfg.max_samples is not None:
            test = np.sort(rng.choice(test, size=min(n_test, max(1, int(cfg.max_samples * cfg.test_fraction))),
                                      replace=False))
    else:
        train_val, test = _split_off(pool, bundle.train_targets, cfg.test_fraction, cfg.seed)
    train, val = _split_off(train_val, bundle.train_targets, cfg.val_fraction, cfg.seed + 1)
    return Split(tuple(int(i) for i in train), tuple(int(i) for i in val), tuple(int(i) for i in test))


SHOWN = 5  # classes a gap note names before it counts the rest

_PARTS = (("train", "training", "the models never learn them"),
          ("val", "validation", "the best epoch is chosen without them"),
          ("test", "test", "no figure says how well they are recognised"))


def gaps(split: Split, bundle: DataBundle) -> list[str]:
    """One note per part of the split that lacks some class (which, and what it means): logged as a warning when
    the split is used, and kept in every row measured on it."""
    pools = {"train": bundle.train_targets, "val": bundle.train_targets,
             "test": np.asarray(getattr(bundle.test_pool, "targets", bundle.train_targets))}
    present = set(range(bundle.num_classes))
    notes = []
    for part, word, meaning in _PARTS:
        have = set(np.unique(pools[part][list(getattr(split, part))]).tolist()) if getattr(split, part) else set()
        lacking = [bundle.classes[c] for c in sorted(present - have)]
        if lacking:
            more = f" and {len(lacking) - SHOWN} more" if len(lacking) > SHOWN else ""
            notes.append(f"{len(lacking)} class(es) have no {word} image ({', '.join(lacking[:SHOWN])}{more}): "
                         f"{meaning}; add images to them")
    return notes


@dataclass
class Loaders:
    train: DataLoader
    val: DataLoader
    test: DataLoader


def loaders(bundle: DataBundle, split: Split, batch_size: int, seed: int = 0, workers: int = 0,
            augment: bool = False) -> Loaders:
    """The train, validation and test loaders of one split (train shuffled with its own seeded generator)."""
    gen = torch.Generator().manual_seed(seed)
    kw: dict[str, Any] = {"batch_size": batch_size, "num_workers": workers}
    train: Dataset = Subset(bundle.train_pool, split.train)
    if augment:
        train = Shifted(train, bundle.image_size)
    return Loaders(
        train=DataLoader(train, shuffle=True, generator=gen, **kw),
        val=DataLoader(Subset(bundle.train_pool, split.val), shuffle=False, **kw),
        test=DataLoader(Subset(bundle.test_pool, split.test), shuffle=False, **kw),
    )
