"""Head training on cached features: the convolutions run once, the head trains on what they gave.

When the convolutions are frozen and the images never change (no augmentation), each image's
feature vector is the same in every epoch, so computing it once and training the head on the
stored vectors gives the same head as running the whole network every step, in a fraction of
the time (at 224 px on a CPU, the convolutions are over 99% of VGG16's MACs). Frozen means
frozen: BatchNorm layers of the feature extractor stay in eval mode, in this path and in the
uncached one (`FitOptions.frozen`), or `vgg16_bn` would keep updating its running statistics.
The shuffling generator has the uncached loader's seed, so both paths see the same batches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from compress.errors import CompressError
from compress.log import log
from compress.training.config import TrainConfig
from compress.training.loop import FitOptions, TrainResult, fit

IN_MEMORY_BYTES = 2 * 1024**3  # larger caches go to a file under the run folder (memory-mapped)


@dataclass
class Cache:
    train: DataLoader
    val: DataLoader
    seconds: float  # the one-time pass of the convolutions over the training and validation images
    where: str  # "memory" or the file


def body(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Everything before the classifier: features, the pooling a torchvision VGG has, the flatten."""
    pool = getattr(model, "avgpool", nn.Identity())
    return lambda x: torch.flatten(pool(model.features(x)), 1)


def check_split(model: nn.Module, x: torch.Tensor) -> None:
    """classifier(body(x)) must be model(x), or training the classifier alone would train another function."""
    model.eval()
    with torch.no_grad():
        whole, parts = model(x), model.classifier(body(model)(x))
    if whole.shape != parts.shape or not torch.allclose(whole, parts, atol=1e-5):
        raise CompressError("this model is not features -> classifier: its head cannot be trained on cached "
                            "features; drop --freeze-features")


def _features(model: nn.Module, loader: DataLoader, device: torch.device, store: Path | None) -> TensorDataset:
    """(feature, label) of every image of `loader`, in its order."""
    run, feats, labels = body(model), None, []
    offset = 0
    with torch.no_grad():
        for x, y in loader:
            z = run(x.to(device)).cpu()
            if feats is None:
                feats = _allocate(len(loader.dataset), z.shape[1], store)  # type: ignore[arg-type]
            feats[offset:offset + len(z)] = z.numpy()
            offset += len(z)
            labels.append(y)
    if feats is None:
        raise CompressError("the split to cache is empty: nothing to train the head on")
    return TensorDataset(torch.from_numpy(np.asarray(feats)), torch.cat(labels))


def _allocate(n: int, width: int, store: Path | None) -> np.ndarray:
    if store is None or n * width * 4 <= IN_MEMORY_BYTES:
        return np.empty((n, width), dtype=np.float32)
    store.parent.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(store, mode="w+", dtype=np.float32, shape=(n, width))


def cache(model: nn.Module, train: DataLoader, val: DataLoader, device: torch.device, folder: Path | None) -> Cache:
    """The convolutions run once over the training and validation images; loaders over what they gave, the
    training one shuffled by a generator of the original's seed (the same batches as the uncached path)."""
    start, rng = time.perf_counter(), torch.get_rng_state()
    model.to(device).eval()
    check_split(model, next(iter(val))[0][:2].to(device))
    plain = DataLoader(train.dataset, batch_size=train.batch_size, shuffle=False)
    stores = (folder / "features-train.npy", folder / "features-val.npy") if folder is not None else (None, None)
    cached_train, cached_val = _features(model, plain, device, stores[0]), _features(model, val, device, stores[1])
    torch.set_rng_state(rng)  # each loader pass drew a seed from the global generator: the head's dropout must
    # then draw what it draws on the uncached path
    gen = getattr(train, "generator", None)
    seed = int(gen.initial_seed()) if gen is not None else 0
    where = f"a file in {folder}" if stores[0] is not None and stores[0].exists() else "memory"
    return Cache(DataLoader(cached_train, batch_size=train.batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(seed)),
                 DataLoader(cached_val, batch_size=val.batch_size, shuffle=False),
                 time.perf_counter() - start, where)


def fit_head(model: nn.Module, train: DataLoader, val: DataLoader, cfg: TrainConfig, device: torch.device,
             opts: FitOptions) -> TrainResult:
    """Train `model.classifier` on cached features (the convolutions frozen); the result's seconds count the
    extraction and the head's training, and its `cache_seconds` the extraction alone. A cache too large for
    memory goes beside the run's epoch checkpoint (`opts.checkpoint`), when it has one."""
    folder = Path(opts.checkpoint).parent if opts.checkpoint is not None else None
    if getattr(cfg, "augment", False):
        raise CompressError("--freeze-features caches each image's features once, but --augment changes the images "
                            "every epoch: drop one of them")
    frozen = [p for p in model.features.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        found = cache(model, train, val, device, folder)
        log(f"{opts.desc}: features of {len(found.train.dataset)} training and {len(found.val.dataset)} validation "
            f"images computed once in {found.seconds:.1f} s ({found.where}); training the head on them")
        result = fit(model.classifier, found.train, found.val, cfg, device, replace(opts, frozen=False))
    finally:
        for p in frozen:
            p.requires_grad_(True)
        for name in ("features-train.npy", "features-val.npy"):
            if folder is not None:
                (folder / name).unlink(missing_ok=True)
    return replace(result, seconds=result.seconds + found.seconds, cache_seconds=found.seconds)


def describe(result: TrainResult) -> str:
    """The row's caveat: what the head's training cost, beside the one-time extraction."""
    cached = result.cache_seconds or 0.0
    return (f"head trained on cached features (convolutions frozen): {cached:.1f} s to compute them once, "
            f"{result.seconds - cached:.1f} s training the head")
