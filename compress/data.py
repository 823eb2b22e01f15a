"""Datasets and the one deterministic split every model is tuned and tested on.

The split is made once, stored beside the baseline, and reused: every compressor picks its
best epoch on the same validation images and is scored on exactly the same test images.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from compress.errors import CompressError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION_DATASETS = ("cifar10", "fashion-mnist")
DATASETS = ("digits", *TORCHVISION_DATASETS)
MIN_IMAGE_SIZE = 32  # VGG16 halves the resolution 5 times


@dataclass(frozen=True)
class DataConfig:
    """Which images, at what size, split how."""

    dataset: str = "digits"
    data: str | None = None  # ImageFolder root; overrides `dataset`
    data_root: str = "data"
    download: bool = False
    image_size: int | None = None  # None: the dataset's natural size (32, or 224 for folders)
    seed: int = 0
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    max_samples: int | None = None  # a seeded subset, for smoke tests

    @property
    def name(self) -> str:
        """Short name used for the report file and run folders."""
        if self.data:
            return Path(self.data).resolve().name or "folder"
        return self.dataset

    def key(self) -> str:
        """Identity of the data a baseline was trained on (part of its cache key)."""
        src = f"folder:{Path(self.data).resolve()}" if self.data else self.dataset
        raw = f"{src}|{self.size}|{self.seed}|{self.test_fraction}|{self.val_fraction}|{self.max_samples}"
        return f"{self.name}-{self.size}px-s{self.seed}-{hashlib.sha256(raw.encode()).hexdigest()[:8]}"

    @property
    def size(self) -> int:
        return self.image_size or (224 if self.data else 32)


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


@dataclass
class DataBundle:
    name: str
    classes: list[str]
    image_size: int
    fingerprint: str  # changes when the underlying images change
    train_pool: Dataset
    test_pool: Dataset
    train_targets: np.ndarray
    official_test: bool  # the dataset ships its own test split

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# ---------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------

def _digits(cfg: DataConfig) -> DataBundle:
    """scikit-learn's bundled 8x8 digits (real scans, offline), upscaled to RGB."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # N,1,8,8 in [0,1]
    x = torch.nn.functional.interpolate(x, size=(cfg.size, cfg.size), mode="bilinear", align_corners=False)
    x = ((x - 0.5) / 0.5).expand(-1, 3, -1, -1).contiguous()
    y = torch.tensor(bunch.target, dtype=torch.long)
    fp = hashlib.sha256(bunch.images.tobytes() + bunch.target.tobytes()).hexdigest()[:16]
    ds = TensorDataset(x, y)
    return DataBundle("digits", [str(c) for c in bunch.target_names], cfg.size, fp, ds, ds,
                      bunch.target.astype(np.int64), official_test=False)


def _transform(size: int, grayscale: bool = False) -> Any:
    from torchvision import transforms as T

    steps: list[Any] = [T.Grayscale(3)] if grayscale else []
    steps += [T.Resize((size, size)), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(steps)


def _folder(cfg: DataConfig) -> DataBundle:
    """An ImageFolder tree, one sub-folder per class, as the seeds use."""
    from torchvision.datasets import ImageFolder

    root = Path(cfg.data or "")
    if not root.exists():
        raise CompressError(f"--data {root} does not exist: pass a folder with one sub-folder of images per class")
    if not root.is_dir():
        raise CompressError(f"--data {root} is a file: pass a folder with one sub-folder of images per class")
    class_dirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise CompressError(f"--data {root} has no class folders: expected {root}/<class name>/<image files>")
    try:
        ds = ImageFolder(str(root), transform=_transform(cfg.size), allow_empty=True)
    except (FileNotFoundError, OSError) as exc:
        raise CompressError(f"--data {root}: {exc}") from None
    counts = np.bincount(np.array(ds.targets, dtype=np.int64), minlength=len(ds.classes))
    empty = [c for c, n in zip(ds.classes, counts) if n == 0]
    if empty:
        raise CompressError(f"--data {root}: class folder(s) {', '.join(empty)} hold no images "
                            "(.jpg .jpeg .png .bmp .webp ...): add images or remove the folder")
    listing = "\n".join(f"{Path(p).relative_to(root)}:{os.path.getsize(p)}" for p, _ in ds.samples)
    fp = hashlib.sha256(listing.encode()).hexdigest()[:16]
    return DataBundle(cfg.name, list(ds.classes), cfg.size, fp, ds, ds, np.array(ds.targets), official_test=False)


def _torchvision(cfg: DataConfig) -> DataBundle:
    """CIFAR-10 / Fashion-MNIST through torchvision, with their official test split."""
    from torchvision import datasets

    cls = {"cifar10": datasets.CIFAR10, "fashion-mnist": datasets.FashionMNIST}[cfg.dataset]
    tf = _transform(cfg.size, grayscale=cfg.dataset == "fashion-mnist")
    root = Path(cfg.data_root)
    try:
        train = cls(str(root), train=True, download=cfg.download, transform=tf)
        test = cls(str(root), train=False, download=cfg.download, transform=tf)
    except RuntimeError as exc:
        raise CompressError(f"{cfg.dataset} not found under --data-root {root}: pass --download (needs internet), "
                            f"or point --data-root at a folder that holds it ({str(exc).splitlines()[0]})") from None
    except OSError as exc:  # URLError and friends when --download has no network
        raise CompressError(f"could not download {cfg.dataset} into {root} ({exc}): this machine may be offline; "
                            "copy the dataset there by hand and drop --download") from None
    targets = np.array(train.targets)
    fp = hashlib.sha256(f"{cfg.dataset}|{len(train)}|{len(test)}|{targets[:1000].tobytes().hex()}".encode())
    return DataBundle(cfg.dataset, list(train.classes), cfg.size, fp.hexdigest()[:16], train, test, targets,
                      official_test=True)


def load(cfg: DataConfig) -> DataBundle:
    """Open the data named by `cfg`, or fail with one line that says what to do."""
    if cfg.image_size is not None and cfg.image_size < MIN_IMAGE_SIZE:
        raise CompressError(f"--image-size {cfg.image_size} is too small: VGG16 needs at least {MIN_IMAGE_SIZE}")
    if cfg.data:
        return _folder(cfg)
    if cfg.dataset == "digits":
        return _digits(cfg)
    if cfg.dataset in TORCHVISION_DATASETS:
        return _torchvision(cfg)
    raise CompressError(f"unknown --dataset {cfg.dataset!r}: expected one of {', '.join(DATASETS)} "
                        "(or --data PATH for a folder of images)")


# ---------------------------------------------------------------------------------------
# Split and loaders
# ---------------------------------------------------------------------------------------

def _split_off(idx: np.ndarray, targets: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified when every class has two members, plain seeded shuffle otherwise."""
    from sklearn.model_selection import train_test_split

    n_out = max(1, int(round(len(idx) * fraction)))
    if len(idx) - n_out < 1:
        raise CompressError(f"only {len(idx)} images: too few to split into train/validation/test")
    labels = targets[idx]
    counts = np.bincount(labels)
    strat = labels if counts[counts > 0].min() >= 2 and n_out >= len(np.unique(labels)) else None
    keep, out = train_test_split(idx, test_size=n_out, random_state=seed, stratify=strat)
    return np.sort(keep), np.sort(out)


def make_split(bundle: DataBundle, cfg: DataConfig) -> Split:
    """Deterministic in (data, seed, fractions): test 20%, validation from the rest."""
    rng = np.random.default_rng(cfg.seed)
    pool = np.arange(len(bundle.train_targets))
    if cfg.max_samples is not None and cfg.max_samples < len(pool):
        pool = np.sort(rng.choice(pool, size=cfg.max_samples, replace=False))
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


class Shifted(Dataset):
    """Random shifts of up to 1/8 of the side (edge-padded random crop), applied to training images only.

    No flips: digits, text and many leaf/face photos are not mirror-symmetric in a way labels survive.
    """

    def __init__(self, base: Dataset, size: int) -> None:
        from torchvision.transforms import v2

        self.base = base
        self.crop = v2.RandomCrop(size, padding=max(1, size // 8), padding_mode="edge")

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x, y = self.base[i]
        return self.crop(x), y


@dataclass
class Loaders:
    train: DataLoader
    val: DataLoader
    test: DataLoader


def loaders(bundle: DataBundle, split: Split, batch_size: int, seed: int = 0, workers: int = 0,
            augment: bool = False) -> Loaders:
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
