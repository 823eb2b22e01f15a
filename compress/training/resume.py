"""--resume: the epoch checkpoint that lets an interrupted training continue where it stopped, bit-exact."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from compress.errors import CompressError
from compress.scaleout import dist
from compress.training.config import TrainConfig


@dataclass
class Progress:
    """Where training stands: what --resume restores and each epoch checkpoint saves."""

    first: int = 1
    done_before: float = 0.0
    best_key: tuple[float, float] = (float("nan"), float("nan"))  # (val accuracy, val loss) of the best epoch
    best_state: dict[str, Any] = field(default_factory=dict)
    best_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def restore(checkpoint: Path, cfg: TrainConfig, model: nn.Module, opt: torch.optim.Optimizer, sched: Any,
             train: Iterable[Any]) -> Progress:
    """Load an epoch checkpoint back into the model, optimiser, schedule and random generators."""
    state = load_state(checkpoint, cfg)
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
    return Progress(first=state["epoch"] + 1, done_before=state["seconds"], best_key=tuple(state["best_key"]),
                     best_state=read_state(checkpoint.with_suffix(".best.pt")), best_epoch=state["best_epoch"],
                     history=state["history"])


def save_state(path: Path, state: dict[str, Any]) -> None:
    """The epoch checkpoint behind --resume, replaced atomically each epoch."""
    from compress.store.atomic import atomic_open

    with atomic_open(path, "wb") as fh:
        torch.save(state, fh)


def read_state(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CompressError(f"cannot resume from {path} ({type(exc).__name__}): delete it to start over") from None


def load_state(path: Path, cfg: TrainConfig) -> dict[str, Any]:
    state = read_state(path)
    if state.get("config") != asdict(cfg):
        raise CompressError(f"{path} was written with training settings {state.get('config')}, not "
                            f"{asdict(cfg)}: resume with the same flags, or delete it to start over")
    return state
