"""One training loop for baseline training and fine-tuning after compression.

The best epoch is chosen on the validation split, never on the test split: the seeds pick
their best model by test accuracy, which inflates the accuracy they then report.
"""

from __future__ import annotations

import copy
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from compress.errors import CompressError
from compress.scaleout import dist

MAX_EPOCHS, MAX_BATCH = 10_000, 65_536  # past these a flag is a typo, not a plan


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser settings; defaults follow the seeds (Adam, lr 1e-4, batch 32)."""

    epochs: int = 14
    lr: float = 1e-4
    batch_size: int = 32
    weight_decay: float = 0.0
    schedule: Literal["cosine", "constant"] = "cosine"
    augment: bool = False  # random shifts of training images (data.Shifted)

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise CompressError(f"--epochs must be >= 0, got {self.epochs}")
        if self.epochs > MAX_EPOCHS:
            raise CompressError(f"--epochs must be at most {MAX_EPOCHS}, got {self.epochs}")
        if self.batch_size <= 0:
            raise CompressError(f"--batch-size must be positive, got {self.batch_size}")
        if self.batch_size > MAX_BATCH:
            raise CompressError(f"--batch-size must be at most {MAX_BATCH}, got {self.batch_size}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise CompressError(f"--lr must be positive, got {self.lr}")
        if self.lr > 10:
            raise CompressError(f"--lr must be at most 10, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise CompressError(f"--weight-decay must be >= 0, got {self.weight_decay}")


@dataclass(frozen=True)
class FinetuneConfig(TrainConfig):
    """Training after compression: the seeds' optimiser, fewer epochs (each compressor sets its own)."""

    epochs: int = 3


@dataclass
class TrainResult:
    best_epoch: int  # 0 = the weights we started from were never beaten
    best_val_accuracy: float
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


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


def make_adam(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Fused Adam where supported: on CPU the unfused step costs ~0.7 s per batch for VGG16's
    134M parameters (allocator churn), the fused one ~0.1 s (measured on the 2-core dev box)."""
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@dataclass
class _Progress:
    """Where training stands: what --resume restores and each epoch checkpoint saves."""

    first: int = 1
    done_before: float = 0.0
    best_key: tuple[float, float] = (float("nan"), float("nan"))  # (val accuracy, val loss) of the best epoch
    best_state: dict[str, Any] = field(default_factory=dict)
    best_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def fit(model: nn.Module, train: Iterable[Any], val: DataLoader, cfg: TrainConfig, device: torch.device,
        desc: str = "train", loss_fn: Callable[..., torch.Tensor] | None = None,
        checkpoint: Path | None = None, resume: bool = False) -> TrainResult:
    """Train with Adam and cross-entropy; load back the weights of the best validation epoch.

    `loss_fn(logits, y, *extra)` replaces cross-entropy when batches carry more than (x, y),
    e.g. the teacher's logits for distillation. With `checkpoint`, the full training state is
    saved after every epoch and removed at the end; `resume` continues from it.

    Best = highest validation accuracy, ties broken by lower validation loss: with a few hundred
    validation images accuracy saturates and ties are common, and loss still separates them
    (on digits the rule changed the pick in 2 of 15 sweep runs, once for better, once worse: README).
    """
    model.to(device)
    world = dist.current()
    start = time.perf_counter()
    opt = make_adam(model, cfg)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs) if cfg.schedule == "cosine" else None
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    writes = checkpoint is not None and world.main  # under torchrun, rank 0 alone writes checkpoints
    if writes and cfg.epochs:  # whose checkpoints these are: a later run cleans them only if we died
        Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
        Path(checkpoint).with_suffix(".owner").write_text(str(os.getpid()))
    resuming = dist.same(bool(resume and checkpoint is not None and Path(checkpoint).exists()))
    if resuming:
        prog = _restore(Path(checkpoint), cfg, model, opt, sched, train)  # type: ignore[arg-type]
        say(f"{desc}: resuming after epoch {prog.first - 1}/{cfg.epochs} from {checkpoint}")
    else:
        prog = _Progress(best_state=copy.deepcopy(model.state_dict()))
        if cfg.epochs:  # epoch 0: the weights we start from
            prog.best_key = evaluate(model, val, device)
        if writes and cfg.epochs:
            _save_state(Path(checkpoint).with_suffix(".best.pt"), prog.best_state)  # type: ignore[arg-type]
    if not resuming:  # a resumed run has each rank's own generator state back already
        dist.decorrelate()
    net, train = dist.wrap(model, device), dist.shard(train, _seed(train))
    for epoch in range(prog.first, cfg.epochs + 1):
        dist.set_epoch(train, epoch)
        train_loss = _train_epoch(net, train, opt, loss_fn, device, f"{desc} epoch {epoch}/{cfg.epochs}")
        if sched is not None:
            sched.step()
        val_acc, val_loss = evaluate(model, val, device)
        prog.history.append({"epoch": epoch, "train_loss": train_loss, "val_accuracy": val_acc,
                             "val_loss": val_loss})
        mark = ""
        if (val_acc, -val_loss) > (prog.best_key[0], -prog.best_key[1]) or np.isnan(prog.best_key[0]):
            prog.best_key, prog.best_state, prog.best_epoch = (val_acc, val_loss), copy.deepcopy(model.state_dict()), \
                epoch
            mark = " (best)"
            if writes and epoch < cfg.epochs:  # written only when it changes: it is a whole model
                _save_state(Path(checkpoint).with_suffix(".best.pt"), prog.best_state)  # type: ignore[arg-type]
        say(f"{desc} epoch {epoch}/{cfg.epochs}: train loss {train_loss:.4f}, "
            f"val acc {100 * val_acc:.2f}%, val loss {val_loss:.4f}{mark}")
        rank_rng = dist.gather(torch.get_rng_state()) if checkpoint is not None and epoch < cfg.epochs else None
        if writes and epoch < cfg.epochs:
            gen = getattr(train, "generator", None)
            _save_state(Path(checkpoint), {
                "config": asdict(cfg), "epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict() if sched is not None else None, "rng": torch.get_rng_state(),
                "rank_rng": rank_rng,  # every rank's dropout generator, so a resumed torchrun run is bit-exact
                "loader_rng": gen.get_state() if gen is not None else None, "best_key": list(prog.best_key),
                "best_epoch": prog.best_epoch, "history": prog.history,
                "seconds": prog.done_before + time.perf_counter() - start})
    model.load_state_dict(prog.best_state)
    dist.barrier()  # no rank goes on (and rank 0 removes nothing) before every rank has finished training
    if writes:  # finished: nothing left to resume
        for suffix in (".pt", ".best.pt", ".owner"):
            Path(checkpoint).with_suffix(suffix).unlink(missing_ok=True)
    return TrainResult(prog.best_epoch, prog.best_key[0], prog.done_before + time.perf_counter() - start,
                       prog.history)


def say(msg: str) -> None:
    """A progress line that does not break a running bar; rank 0 alone speaks under torchrun."""
    if dist.current().main:
        tqdm.write(msg, file=sys.stderr)


def _seed(loader: Any) -> int:
    """The seed of a loader's shuffling generator: the distributed sampler shuffles from the same seed."""
    gen = getattr(loader, "generator", None) or getattr(getattr(loader, "loader", None), "generator", None)
    return int(gen.initial_seed()) if gen is not None else 0


def _train_epoch(model: nn.Module, train: Iterable[Any], opt: torch.optim.Optimizer,
                 loss_fn: Callable[..., torch.Tensor], device: torch.device, desc: str) -> float:
    """One pass over the training batches; returns the mean training loss."""
    model.train()
    total, n = 0.0, 0
    bar = tqdm(train, desc=desc, leave=False, unit="batch",  # None: no bar when stderr is not a terminal
               disable=None if dist.current().main else True)
    for batch in bar:
        x, y, *extra = (t.to(device) for t in batch)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y, *extra)
        value = loss.item()
        if not math.isfinite(value):  # NaN weights would be cached and measured as if they were a model
            raise CompressError(f"{desc}: the training loss became {value} at batch {n // max(len(y), 1) + 1}: "
                                "training diverged and nothing was saved; lower --lr or check the data")
        loss.backward()
        opt.step()
        total, n = total + value * len(y), n + len(y)
        bar.set_postfix(loss=f"{total / n:.3f}")
    total, n = dist.all_sum([total, float(n)])  # under torchrun: the mean over every rank's images
    return total / max(n, 1)


def _restore(checkpoint: Path, cfg: TrainConfig, model: nn.Module, opt: torch.optim.Optimizer, sched: Any,
             train: Iterable[Any]) -> _Progress:
    """Load an epoch checkpoint back into the model, optimiser, schedule and random generators."""
    state = _load_state(checkpoint, cfg)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    if sched is not None:
        sched.load_state_dict(state["scheduler"])
    rank_rng = state.get("rank_rng")
    world = dist.current()
    if world.active and not (isinstance(rank_rng, list) and len(rank_rng) == world.size):
        raise CompressError(f"{checkpoint} was written by a run of {len(rank_rng or [None])} process(es), this one "
                            f"has {world.size}: resume with the same --nproc-per-node, or delete it to start over")
    torch.set_rng_state(rank_rng[world.rank] if world.active else state["rng"])  # type: ignore[index]
    gen = getattr(train, "generator", None)
    if gen is not None and state.get("loader_rng") is not None:
        gen.set_state(state["loader_rng"])
    return _Progress(first=state["epoch"] + 1, done_before=state["seconds"], best_key=tuple(state["best_key"]),
                     best_state=_read(checkpoint.with_suffix(".best.pt")), best_epoch=state["best_epoch"],
                     history=state["history"])


def _save_state(path: Path, state: dict[str, Any]) -> None:
    """The epoch checkpoint behind --resume, replaced atomically each epoch."""
    from compress.store.atomic import atomic_open

    with atomic_open(path, "wb") as fh:
        torch.save(state, fh)


def _read(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CompressError(f"cannot resume from {path} ({type(exc).__name__}): delete it to start over") from None


def _load_state(path: Path, cfg: TrainConfig) -> dict[str, Any]:
    state = _read(path)
    if state.get("config") != asdict(cfg):
        raise CompressError(f"{path} was written with training settings {state.get('config')}, not "
                            f"{asdict(cfg)}: resume with the same flags, or delete it to start over")
    return state
