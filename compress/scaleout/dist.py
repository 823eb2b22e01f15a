"""Running under torchrun: which process this is, and the few collectives the pipeline needs.

torchrun (or any launcher that sets RANK, WORLD_SIZE and LOCAL_RANK) starts one process per
GPU or CPU slot; every process runs the same command. Training is DistributedDataParallel
over shards of the stored training split; everything else (measuring, writing rows, the
store, checkpoints, the report) happens once, on rank 0, while the others wait, and its
results are broadcast so every rank continues from the same values. A plain
`python -m compress` sets none of the variables and everything here is a no-op.

Waiting and broadcasting use a gloo group even when training uses NCCL: an NCCL barrier
spins a CPU core, which would disturb the CPU latency rank 0 is timing at that moment.
"""

from __future__ import annotations

import copy
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Iterator, TypeVar

import torch
import torch.distributed as tdist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Subset

from compress.errors import CompressError
from compress.scaleout import syncbn

T = TypeVar("T")

# Rank 0 may measure for a long time (a 224 px row takes minutes) while the others wait.
WAIT = timedelta(minutes=float(os.environ.get("COMPRESS_DIST_TIMEOUT_MIN", "240")))
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class World:
    """This process's place in the job; the default is a plain single process."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1
    backend: str | None = None  # "gloo" or "nccl" under torchrun; None for a plain run

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.backend is not None

    def per_rank(self, global_batch: int) -> int:
        """The batch each process takes: --batch-size is the global batch, whatever the process count."""
        if global_batch % self.size:
            raise CompressError(f"--batch-size {global_batch} is the global batch and must divide evenly over the "
                                f"{self.size} processes: pass a multiple of {self.size}")
        return global_batch // self.size

    def record(self, global_batch: int | None) -> dict[str, Any]:
        """What a row says about how its model was trained (None: nothing was trained in this invocation)."""
        return {"world_size": self.size, "backend": self.backend,
                "per_rank_batch": None if global_batch is None else global_batch // self.size}


@dataclass
class _Job:
    """The job this process has joined: one object, replaced by start() and stop(), instead of three globals."""

    world: World = field(default_factory=World)
    control: Any = None  # the gloo group for barriers and object broadcasts
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


_job = _Job()


def current() -> World:
    return _job.world


def launched() -> bool:
    return all(v in os.environ for v in LAUNCH_VARS)


def start(device: str) -> torch.device:
    """Join the torchrun job if launched by one (NCCL on CUDA, gloo on the CPU); returns this rank's device."""
    if not launched():
        return _pick(device)
    if _job.world.active:  # joined already (the CLI joins before its first check, the session asks again)
        return _job.device
    rank, local, size = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
    wants_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if wants_cuda:
        if local >= torch.cuda.device_count():
            raise CompressError(f"local rank {local} has no GPU (this node has {torch.cuda.device_count()}): "
                                "pass --nproc-per-node at most the GPU count, or --device cpu")
        torch.cuda.set_device(local)
    backend = "nccl" if wants_cuda else "gloo"
    if not tdist.is_initialized():
        tdist.init_process_group(backend, timeout=WAIT)
    control = tdist.new_group(backend="gloo", timeout=WAIT) if backend == "nccl" else tdist.group.WORLD
    _job.world = World(rank, local, size, backend)
    _job.control = control
    _job.device = torch.device("cuda", local) if wants_cuda else torch.device("cpu")
    return _job.device


def stop() -> None:
    """Leave the job cleanly (at the end of the command, on every rank)."""
    if tdist.is_initialized():
        tdist.destroy_process_group()
    _job.world, _job.control = World(), None


def _pick(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CompressError("--device cuda was asked for, but no CUDA device is available here: use --device cpu")
    if name not in ("cpu", "cuda"):
        raise CompressError(f"unknown --device {name!r}: expected auto, cpu or cuda")
    return torch.device(name)


def barrier() -> None:
    if _job.world.active:
        tdist.barrier(group=_job.control)


def from_main(fn: Callable[[], T]) -> T:
    """Rank 0 runs `fn` (measuring, writing), the others wait; every rank returns rank 0's result."""
    if not _job.world.active:
        return fn()
    box = [fn() if _job.world.main else None]
    tdist.broadcast_object_list(box, src=0, group=_job.control)
    return box[0]  # type: ignore[return-value]


def gather(value: T) -> list[T] | None:
    """Every rank's value, in rank order, on rank 0 (None elsewhere); [value] in a plain run."""
    if not _job.world.active:
        return [value]
    out: list[Any] | None = [None] * _job.world.size if _job.world.main else None
    tdist.gather_object(value, out, dst=0, group=_job.control)
    return out


def same(value: T) -> T:
    """Rank 0's value on every rank: a decision (is the baseline cached?) must not differ between ranks."""
    return from_main(lambda: value)


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (it creates the file), then the others run it (and find the file)."""
    if _job.world.active and not _job.world.main:
        barrier()
    yield
    if _job.world.active and _job.world.main:
        barrier()


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sum over ranks, in float64 (validation counts and losses)."""
    if not _job.world.active:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    tdist.all_reduce(t, group=_job.control)
    return t.tolist()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around a model already on its device (a fresh wrap per training: a pruned
    model has new parameters, and a DDP made before pruning would reduce the old ones); its BatchNorm layers
    normalise over the global batch while it trains (scaleout/syncbn.py; `unwrap_training` undoes it)."""
    if not _job.world.active:
        return model
    syncbn.convert(model, device.type == "cuda")
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap_training(model: nn.Module) -> None:
    """After training: plain BatchNorm back in the model that is saved, exported and measured."""
    if _job.world.active:
        syncbn.restore(model)


def all_finite(value: float) -> bool:
    """Whether the loss is finite on every rank: all ranks decide together, so none raises while the others wait
    in the next all-reduce (a NaN on one rank ends every rank at the same step)."""
    finite = math.isfinite(value)
    if not _job.world.active:
        return finite
    bad = torch.tensor([0.0 if finite else 1.0], dtype=torch.float64)
    tdist.all_reduce(bad, group=_job.control)
    return bool(bad.item() == 0)


def shard(loader: DataLoader, seed: int) -> DataLoader:
    """This rank's part of a training loader: DistributedSampler (seeded, reshuffled by set_epoch),
    the per-rank batch, the same collate. A single process takes the same sampler with one replica,
    so the global batches are the same images in the same order for any process count (the k-th
    global batch is the k-th slice of one seeded permutation). The sampler pads the split to a
    multiple of the process count by repeating a few images, as DistributedSampler always does:
    with N not dividing the split, those few images count twice in an epoch."""
    if isinstance(loader, DataLoader) and not isinstance(loader.sampler, RandomSampler):
        return loader  # not shuffled: nothing to share out in a plain run, and never sharded here
    if not isinstance(loader, DataLoader):  # a wrapper such as distillation's on-the-fly teacher: shard its loader
        if not hasattr(loader, "loader"):
            return loader
        inner = copy.copy(loader)
        inner.loader = shard(loader.loader, seed)
        return inner
    sampler = DistributedSampler(loader.dataset, num_replicas=_job.world.size, rank=_job.world.rank, shuffle=True,
                                 seed=seed)
    return DataLoader(loader.dataset, batch_size=_job.world.per_rank(loader.batch_size or 1), sampler=sampler,
                      num_workers=loader.num_workers, collate_fn=loader.collate_fn)


def shard_eval(loader: DataLoader) -> DataLoader:
    """Every rank-th image of an evaluation loader, without padding: summed over ranks it is the whole split once."""
    if not _job.world.active:
        return loader
    part = Subset(loader.dataset, range(_job.world.rank, len(loader.dataset), _job.world.size))  # type: ignore[arg-type]
    return DataLoader(part, batch_size=loader.batch_size, shuffle=False, num_workers=loader.num_workers,
                      collate_fn=loader.collate_fn)


def set_epoch(loader: Any, epoch: int) -> None:
    """A new permutation each epoch (through a wrapper such as distillation's, to the loader inside it)."""
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
    elif hasattr(loader, "loader"):
        set_epoch(loader.loader, epoch)


def decorrelate() -> None:
    """Distinct, reproducible random streams per rank (dropout masks), derived from the shared seed."""
    if _job.world.active:
        torch.manual_seed(int(torch.randint(0, 2**62, (1,))) + _job.world.rank)

