"""Datasets and the one deterministic split every model is tuned and tested on.

The split is made once, stored beside the baseline, and reused: every compressor picks its
best epoch on the same validation images and is scored on exactly the same test images.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from compress.configs import NEW, record
from compress.data import image_folders
from compress.data.normalization import Normalizer
from compress.errors import CompressError

TORCHVISION_DATASETS = ("cifar10", "fashion-mnist")
DATASETS = ("digits", *TORCHVISION_DATASETS)
MIN_IMAGE_SIZE = 32  # VGG16 halves the resolution 5 times
MAX_IMAGE_SIZE = 4096


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
    test_data: str | None = None  # --data: a separate held-out folder of the same classes is the test split
    # Input normalisation, stated in every row. "auto" picks by data and model: "imagenet" mean/std for folders,
    # torchvision datasets and ImageNet-pretrained baselines, "half" for the built-in digits, and what a Keras
    # file's model expects ("raw" unless it has a Rescaling layer).
    normalization: Literal["auto", "imagenet", "half", "raw", "unit", "caffe"] = field(default="auto", metadata={
        "help": "the input a model expects: imagenet (mean/std), half ((x-0.5)/0.5), raw (RGB 0-255, what the "
                "Keras seeds feed), unit (0-1), caffe (keras.applications.vgg16.preprocess_input: BGR, ImageNet "
                "means subtracted); auto picks by data and model"})
    # How photos are brought to --image-size: Pillow's antialiased bilinear (the suite's default), or what a Keras
    # pipeline did: bilinear without antialiasing (image_dataset_from_directory), nearest (flow_from_directory,
    # load_img). Folders only; the built-in digits are interpolated as always.
    resize: Literal["antialias", "bilinear", "nearest"] = field(default="antialias", metadata={
        "help": "how photos are resized: antialias (Pillow's bilinear with antialiasing, the default), bilinear "
                "(no antialiasing: Keras's image_dataset_from_directory), nearest (Keras's flow_from_directory and "
                "load_img)"})

    # the name of this data in the workdir (run folders, the store, reports/<name>.md): another folder with the same
    # name as one already there is refused, naming both, unless one of them is given another name here
    # What the baseline model expects, which "auto" follows: a Keras file's own preprocessing (raw, unit, half or its
    # folded affine), "imagenet" for ImageNet weights; None: the data's own default. Set by the session, not a flag.
    model_expects: str | None = field(default=None, metadata={"cli": False, NEW: True})
    dataset_name: str | None = field(default=None, metadata={NEW: True, "help": "the name of this data in the "
                                     "workdir and its report (default: the folder's name, or --dataset); give a "
                                     "second folder of the same name another one"})

    def __post_init__(self) -> None:
        if self.dataset_name is not None and (not self.dataset_name.strip() or
                                              re.sub(r"[^\w.-]+", "_", self.dataset_name) != self.dataset_name
                                              or self.dataset_name.startswith(".")):
            raise CompressError(f"--dataset-name {self.dataset_name!r}: use letters, digits, '.', '-' and '_' only "
                                "(it names folders and the report file), not starting with '.'")
        if not 0 <= self.seed < 2**32:
            raise CompressError(f"--seed must be between 0 and {2**32 - 1} (numpy's range), got {self.seed}")
        if self.image_size is not None and self.image_size < MIN_IMAGE_SIZE:
            raise CompressError(f"--image-size {self.image_size} is too small: VGG16 needs at least {MIN_IMAGE_SIZE}")
        if self.image_size is not None and self.image_size > MAX_IMAGE_SIZE:
            raise CompressError(f"--image-size {self.image_size} is too large: at most {MAX_IMAGE_SIZE} (one VGG16 "
                                "image there is already gigabytes of activations)")
        if self.normalization == "auto":  # decided here and nowhere else; key() derives the cache identity from it
            object.__setattr__(self, "normalization", self.auto_normalization)
        if self.resize != "antialias" and not self.data:
            raise CompressError(f"--resize {self.resize} applies to photo folders (--data): the built-in datasets are "
                                "not photos of another size; drop --resize")
        if self.test_data is not None and not self.data:
            raise CompressError("--test-data needs --data: it is the held-out test folder of an ImageFolder tree")
        if self.test_data is not None and self.data:
            train, test = Path(self.data).resolve(), Path(self.test_data).resolve()
            if train == test or train in test.parents or test in train.parents:
                raise CompressError(f"--test-data {self.test_data} and --data {self.data} overlap: the test images would "
                                    "be training images too; pass a held-out folder the model never sees")
        if self.max_samples is not None and self.max_samples <= 0:
            raise CompressError(f"--max-samples must be positive, got {self.max_samples}")
        for name in ("test_fraction", "val_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise CompressError(f"{name} must be between 0 and 1, got {getattr(self, name)}")

    @property
    def name(self) -> str:
        """Short name used for the report file and run folders."""
        if self.dataset_name:
            return self.dataset_name
        if self.data:
            return Path(self.data).resolve().name or "folder"
        return self.dataset

    @property
    def auto_normalization(self) -> str:
        """What --normalization auto means for this data and model: what the model expects, else ImageNet's
        statistics for photos and torchvision datasets, (x - 0.5) / 0.5 for the built-in digits."""
        return self.model_expects or ("imagenet" if self.data or self.dataset != "digits" else "half")

    def source(self) -> str:
        """What the data is, whatever it is called: the training folder, or the built-in dataset (a second folder
        with the same name must not share the first one's rows and report)."""
        return f"folder {Path(self.data).resolve()}" if self.data else f"built-in {self.dataset}"

    def record(self) -> dict[str, Any]:
        """The config as rows, splits and caches store it (configs.record: later fields at their default left out)."""
        return record(self)

    def key(self) -> str:
        """Identity of the data a baseline was trained on (part of its cache key)."""
        src = f"folder:{Path(self.data).resolve()}" if self.data else self.dataset
        raw = f"{src}|{self.size}|{self.seed}|{self.test_fraction}|{self.val_fraction}|{self.max_samples}"
        if self.test_data:  # keys of data without a test folder stay what they were
            raw += f"|test:{Path(self.test_data).resolve()}"
        if self.resize != "antialias" and self.data:  # other pixels, another baseline; default keys unchanged
            raw += f"|resize:{self.resize}"
        if self.normalization != self.auto_normalization:  # likewise: the model sees other pixels
            raw += f"|norm:{self.normalization}"
        return f"{self.name}-{self.size}px-s{self.seed}-{hashlib.sha256(raw.encode()).hexdigest()[:8]}"

    @property
    def normalizer(self) -> "Normalizer":
        return Normalizer(self.normalization)

    @property
    def size(self) -> int:
        return self.image_size or (224 if self.data else 32)


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


def _digits(cfg: DataConfig) -> DataBundle:
    """scikit-learn's bundled 8x8 digits (real scans, offline), upscaled to RGB."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # N,1,8,8 in [0,1]
    x = torch.nn.functional.interpolate(x, size=(cfg.size, cfg.size), mode="bilinear", align_corners=False)
    x = cfg.normalizer(x.expand(-1, 3, -1, -1)).contiguous()
    y = torch.tensor(bunch.target, dtype=torch.long)
    fp = hashlib.sha256(bunch.images.tobytes() + bunch.target.tobytes()).hexdigest()[:16]
    ds = TensorDataset(x, y)
    return DataBundle("digits", [str(c) for c in bunch.target_names], cfg.size, fp, ds, ds,
                      bunch.target.astype(np.int64), official_test=False)


def _transform(size: int, normalizer: Normalizer, grayscale: bool = False, resize: str = "antialias") -> Any:
    from torchvision import transforms as T

    steps: list[Any] = [T.Grayscale(3)] if grayscale else []
    if resize == "nearest":  # what Keras's load_img does: Pillow, nearest
        steps += [T.Resize((size, size), interpolation=T.InterpolationMode.NEAREST), T.ToTensor()]
    elif resize == "bilinear":  # tf.image.resize: bilinear, half-pixel centres, no antialiasing
        steps += [T.PILToTensor(), T.ConvertImageDtype(torch.float32),
                  T.Resize((size, size), interpolation=T.InterpolationMode.BILINEAR, antialias=False)]
    else:
        steps += [T.Resize((size, size)), T.ToTensor()]
    return T.Compose([*steps, normalizer])


def _folder(cfg: DataConfig) -> DataBundle:
    """An ImageFolder tree; with --test-data, a second tree of the same classes is the test split."""
    classes, samples, fp = image_folders.scan(Path(cfg.data or ""), cfg.size, cfg.strict)
    draft = cfg.size if cfg.resize == "antialias" else None  # Keras resizes the full-size decode
    ds = image_folders.ImageFiles(samples, _transform(cfg.size, cfg.normalizer, resize=cfg.resize), draft)
    if cfg.test_data is None:
        return DataBundle(cfg.name, classes, cfg.size, fp, ds, ds, np.array(ds.targets), official_test=False)
    test_classes, test_samples, test_fp = image_folders.scan(Path(cfg.test_data), cfg.size, cfg.strict, "--test-data")
    if test_classes != classes:
        only_train = sorted(set(classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(classes))
        raise CompressError(f"--test-data {cfg.test_data} has {len(test_classes)} classes, --data {cfg.data} has "
                            f"{len(classes)}: only in --data: {', '.join(only_train) or 'none'}; only in --test-data: "
                            f"{', '.join(only_test) or 'none'}. Both need the same class folders")
    test = image_folders.ImageFiles(test_samples, _transform(cfg.size, cfg.normalizer, resize=cfg.resize), draft)
    return DataBundle(cfg.name, classes, cfg.size, hashlib.sha256(f"{fp}|{test_fp}".encode()).hexdigest()[:16],
                      ds, test, np.array(ds.targets), official_test=True)


def _torchvision(cfg: DataConfig) -> DataBundle:
    """CIFAR-10 / Fashion-MNIST through torchvision, with their official test split."""
    from torchvision import datasets

    cls = {"cifar10": datasets.CIFAR10, "fashion-mnist": datasets.FashionMNIST}[cfg.dataset]
    tf = _transform(cfg.size, cfg.normalizer, grayscale=cfg.dataset == "fashion-mnist")
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
    if cfg.data:
        return _folder(cfg)
    if cfg.dataset == "digits":
        return _digits(cfg)
    if cfg.dataset in TORCHVISION_DATASETS:
        return _torchvision(cfg)
    raise CompressError(f"unknown --dataset {cfg.dataset!r}: expected one of {', '.join(DATASETS)} "
                        "(or --data PATH for a folder of images)")


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
