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
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from compress.errors import CompressError
from compress.scaleout import dist
from compress.training.config import TrainConfig
from compress.training.evaluation import evaluate
from compress.training.resume import Progress, restore, save_state


@dataclass
class TrainResult:
    best_epoch: int  # 0 = the weights we started from were never beaten
    best_val_accuracy: float
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    cache_seconds: float | None = None  # training/cached.py: the one-time feature extraction, within `seconds`
    stopped: str | None = None  # why it ended before its last epoch (early stopping), or None


def make_adam(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Fused Adam where supported: on CPU the unfused step costs ~0.7 s per batch for VGG16's
    134M parameters (allocator churn), the fused one ~0.1 s (measured on the 2-core dev box)."""
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@dataclass(frozen=True)
class FitOptions:
    """How one training run is labelled and kept: its progress label, its loss, its epoch checkpoint.

    `loss_fn(logits, y, *extra)` replaces cross-entropy when batches carry more than (x, y), e.g. the
    teacher's logits for distillation. With `checkpoint`, the full training state is saved after every
    epoch and removed at the end; `resume` continues from it.
    """

    desc: str = "train"
    loss_fn: Callable[..., torch.Tensor] | None = None
    checkpoint: Path | None = None
    resume: bool = False
    frozen: bool = False  # the convolutions are frozen: model.features stays in eval mode (BatchNorm statistics)


@dataclass
class _Run:
    """One fit() in progress: what every epoch reads and updates."""

    model: nn.Module
    cfg: TrainConfig
    opts: FitOptions
    opt: torch.optim.Optimizer
    sched: Any
    writes: bool  # under torchrun, rank 0 alone writes checkpoints
    start: float = field(default_factory=time.perf_counter)

    def save_best(self, prog: Progress) -> None:
        if self.writes:  # written only when it changes: it is a whole model
            save_state(Path(self.opts.checkpoint).with_suffix(".best.pt"), prog.best_state)  # type: ignore[arg-type]

    def save_epoch(self, prog: Progress, epoch: int, train: Any) -> None:
        rank_rng = dist.gather(torch.get_rng_state()) if self.opts.checkpoint is not None else None
        if not self.writes:
            return
        gen = getattr(train, "generator", None)
        save_state(Path(self.opts.checkpoint), {  # type: ignore[arg-type]
            "config": asdict(self.cfg), "epoch": epoch, "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict() if self.sched is not None else None,
            "rng": torch.get_rng_state(),
            "rank_rng": rank_rng,  # every rank's dropout generator, so a resumed torchrun run is bit-exact
            "loader_rng": gen.get_state() if gen is not None else None, "best_key": list(prog.best_key),
            "best_epoch": prog.best_epoch, "history": prog.history,
            "seconds": prog.done_before + time.perf_counter() - self.start})


def fit(model: nn.Module, train: Iterable[Any], val: DataLoader, cfg: TrainConfig, device: torch.device,
        opts: FitOptions = FitOptions()) -> TrainResult:
    """Train with Adam and cross-entropy; load back the weights of the best validation epoch.

    Best = highest validation accuracy, ties broken by lower validation loss: with a few hundred
    validation images accuracy saturates and ties are common, and loss still separates them
    (on digits the rule changed the pick in 2 of 15 sweep runs, once for better, once worse: README).
    """
    model.to(device)
    opt = make_adam(model, cfg)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs) if cfg.schedule == "cosine" else None
    run = _Run(model, cfg, opts, opt, sched, opts.checkpoint is not None and dist.current().main)
    prog = _begin(run, train, val, device)
    loss_fn = opts.loss_fn or nn.CrossEntropyLoss()
    net, train = dist.wrap(model, device), dist.shard(train, _seed(train))
    for epoch in range(prog.first, cfg.epochs + 1):
        dist.set_epoch(train, epoch)
        net.train()
        if opts.frozen:  # frozen convolutions keep their BatchNorm statistics (training/cached.py)
            model.features.eval()
        train_loss = _train_epoch(net, train, opt, loss_fn, device, f"{opts.desc} epoch {epoch}/{cfg.epochs}")
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
            if epoch < cfg.epochs:
                run.save_best(prog)
        waited = epoch - prog.best_epoch
        say(f"{opts.desc} epoch {epoch}/{cfg.epochs}: train loss {train_loss:.4f}, "
            f"val acc {100 * val_acc:.2f}%, val loss {val_loss:.4f}{mark}"
            + (f" (patience {waited}/{cfg.patience})" if cfg.patience and waited else ""))
        if dist.same(bool(cfg.patience and waited >= cfg.patience and epoch < cfg.epochs)):  # rank 0 decides
            stopped = (f"stopped early after epoch {epoch} of {cfg.epochs}: no better validation epoch (accuracy, loss "
                       f"as tie-break) in the {cfg.patience} epochs after epoch {prog.best_epoch} "
                       f"(--baseline-patience {cfg.patience})")
            say(f"{opts.desc}: {stopped}")
            return _finish(run, prog, stopped)  # the schedule is not annealed: its length is the recipe's
        if epoch < cfg.epochs:
            run.save_epoch(prog, epoch, train)
    return _finish(run, prog)


def _begin(run: _Run, train: Iterable[Any], val: DataLoader, device: torch.device) -> Progress:
    """Where training starts: the resumed state of an interrupted run, or epoch 0 (the weights we start from)."""
    checkpoint = run.opts.checkpoint
    if run.writes and run.cfg.epochs:  # whose checkpoints these are: a later run cleans them only if we died
        Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)  # type: ignore[arg-type]
        Path(checkpoint).with_suffix(".owner").write_text(str(os.getpid()))  # type: ignore[arg-type]
    if dist.same(bool(run.opts.resume and checkpoint is not None and Path(checkpoint).exists())):
        prog = restore(Path(checkpoint), run.cfg, run.model, run.opt, run.sched, train)  # type: ignore[arg-type]
        say(f"{run.opts.desc}: resuming after epoch {prog.first - 1}/{run.cfg.epochs} from {checkpoint}")
        return prog  # a resumed run has each rank's own generator state back already
    prog = Progress(best_state=copy.deepcopy(run.model.state_dict()))
    if run.cfg.epochs:
        prog.best_key = evaluate(run.model, val, device)
        run.save_best(prog)
    dist.decorrelate()
    return prog


def _finish(run: _Run, prog: Progress, stopped: str | None = None) -> TrainResult:
    """The best epoch's weights back in the model; the epoch checkpoint removed (nothing left to resume)."""
    dist.unwrap_training(run.model)  # plain BatchNorm again (the global-batch one was for training)
    run.model.load_state_dict(prog.best_state)
    dist.barrier()  # no rank goes on (and rank 0 removes nothing) before every rank has finished training
    if run.writes:
        for suffix in (".pt", ".best.pt", ".owner"):
            Path(run.opts.checkpoint).with_suffix(suffix).unlink(missing_ok=True)  # type: ignore[arg-type]
    return TrainResult(prog.best_epoch, prog.best_key[0], prog.done_before + time.perf_counter() - run.start,
                       prog.history, stopped=stopped)


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
    """One pass over the training batches, the model already in training mode; returns the mean training loss."""
    total, n = 0.0, 0
    bar = tqdm(train, desc=desc, leave=False, unit="batch",  # None: no bar when stderr is not a terminal
               disable=None if dist.current().main else True)
    for batch in bar:
        x, y, *extra = (t.to(device) for t in batch)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y, *extra)
        value = loss.item()
        if not dist.all_finite(value):  # NaN weights would be cached and measured as if they were a model; every
            where = "" if math.isfinite(value) else f" {value}"  # rank decides together and raises at the same step
            raise CompressError(f"{desc}: the training loss became{where or ' non-finite on another rank'} at batch "
                                f"{n // max(len(y), 1) + 1}: training diverged and nothing was saved; lower --lr or "
                                "check the data")
        loss.backward()
        opt.step()
        total, n = total + value * len(y), n + len(y)
        bar.set_postfix(loss=f"{total / n:.3f}")
    total, n = dist.all_sum([total, float(n)])  # under torchrun: the mean over every rank's images
    return total / max(n, 1)
