"""Datasets and the one deterministic split every model is tuned and tested on.

The split is made once, stored beside the baseline, and reused: every compressor picks its
best epoch on the same validation images and is scored on exactly the same test images.
"""

from __future__ import annotations

import hashlib
import os
import sys
import unicodedata
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
    strict: bool = False  # --data: refuse unreadable images instead of skipping them with a warning

    def __post_init__(self) -> None:
        if self.max_samples is not None and self.max_samples <= 0:
            raise CompressError(f"--max-samples must be positive, got {self.max_samples}")
        for name in ("test_fraction", "val_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise CompressError(f"{name} must be between 0 and 1, got {getattr(self, name)}")

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


IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")
MAX_PIXELS = 400_000_000  # Pillow's bomb guard, raised: a 100-megapixel photo is a photo, not an attack


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") or part.startswith("__MACOSX") for part in rel.parts)


def open_rgb(path: str | Path, size: int | None = None) -> Any:
    """Any mode Pillow reads (L, LA, P, RGBA, CMYK, I;16...) as RGB; big JPEGs decoded at reduced scale."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    img = Image.open(path)
    if size and img.format == "JPEG":
        img.draft("RGB", (size * 2, size * 2))  # DCT scaling: a 6000px photo decodes at a fraction of the cost
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):  # 16-bit / float scans: stretch to 8 bits
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(arr.astype(np.uint8), "L")
    return img.convert("RGB")


class ImageFiles(Dataset):
    """(image, label) from a list of files; every image converted to RGB before the transform."""

    def __init__(self, samples: list[tuple[str, int]], transform: Any, size: int) -> None:
        self.samples, self.transform, self.size = samples, transform, size
        self.targets = [t for _, t in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, target = self.samples[i]
        return self.transform(open_rgb(path, self.size)), target


def _check_image(path: Path, size: int) -> str | None:
    """None if the image decodes completely, else why not (truncated, not an image, ...)."""
    try:
        img = open_rgb(path, size)
        img.load()
        return None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError...
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'}"


def _folder(cfg: DataConfig) -> DataBundle:
    """An ImageFolder tree, one sub-folder per class, as the seeds use, tolerant of real-world mess.

    Classes are the sorted (Unicode NFC) folder names. Hidden files and non-image files are
    skipped; images that do not decode are skipped with a warning naming each (or refused with
    --strict). Every image is converted to RGB, whatever its mode.
    """
    root = Path(cfg.data or "")
    if not root.exists():
        raise CompressError(f"--data {root} does not exist: pass a folder with one sub-folder of images per class")
    if not root.is_dir():
        raise CompressError(f"--data {root} is a file: pass a folder with one sub-folder of images per class")
    class_dirs = sorted((p for p in root.iterdir() if p.is_dir() and not _hidden(Path(p.name))),
                        key=lambda p: unicodedata.normalize("NFC", p.name))
    if not class_dirs:
        raise CompressError(f"--data {root} has no class folders: expected {root}/<class name>/<image files>")
    classes = [unicodedata.normalize("NFC", p.name) for p in class_dirs]
    samples: list[tuple[str, int]] = []
    empty, bad, ignored = [], [], 0
    for label, cdir in enumerate(class_dirs):
        files = sorted((p for p in cdir.rglob("*") if p.is_file() and not _hidden(p.relative_to(cdir))),
                       key=lambda p: unicodedata.normalize("NFC", str(p.relative_to(root))))
        images = [p for p in files if p.suffix.lower() in IMAGE_EXTS]
        ignored += len(files) - len(images)
        good = []
        for p in images:
            why = _check_image(p, cfg.size)
            if why is None:
                good.append((str(p), label))
            else:
                bad.append(f"{p.relative_to(root)} ({why})")
        if not good:
            empty.append(classes[label])
        samples += good
    if bad and cfg.strict:
        raise CompressError(f"--data {root}: {len(bad)} image(s) cannot be read: {'; '.join(bad[:5])}"
                            f"{' ...' if len(bad) > 5 else ''}; fix or remove them, or drop --strict to skip them")
    if bad:
        print(f"warning: skipped {len(bad)} unreadable image(s) under {root}: " + "; ".join(bad), file=sys.stderr)
    if ignored:
        print(f"note: ignored {ignored} non-image file(s) under {root} (images: {' '.join(IMAGE_EXTS)})",
              file=sys.stderr)
    if empty:
        raise CompressError(f"--data {root}: class folder(s) {', '.join(empty)} hold no readable images "
                            f"({' '.join(IMAGE_EXTS)}): add images or remove the folder")
    listing = "\n".join(f"{unicodedata.normalize('NFC', str(Path(p).relative_to(root)))}:{os.path.getsize(p)}"
                         for p, _ in samples)
    fp = hashlib.sha256(listing.encode()).hexdigest()[:16]
    ds = ImageFiles(samples, _transform(cfg.size), cfg.size)
    return DataBundle(cfg.name, classes, cfg.size, fp, ds, ds, np.array(ds.targets), official_test=False)


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
