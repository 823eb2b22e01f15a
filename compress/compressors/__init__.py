"""Registry of compressors: a dict plus a decorator (torchvision's register_model pattern).

A compressor is a function `(model, spec, config, ctx) -> (model, spec)` with a typed,
frozen dataclass config whose fields become its CLI flags. Nothing downstream (measurement,
store, report) knows which compressor ran; adding one means adding one module here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from torch import nn

from compress.errors import CompressError
from compress.models import ModelSpec


@dataclass
class Context:
    """What a compressor may use besides the model: data, device, the baseline's spec."""

    loaders: Any  # compress.data.Loaders
    device: Any  # torch.device
    num_classes: int
    image_size: int


class CompressFn(Protocol):
    def __call__(self, model: nn.Module, spec: ModelSpec, config: Any, ctx: Context) -> tuple[nn.Module, ModelSpec]:
        ...


@dataclass(frozen=True)
class Compressor:
    name: str
    fn: CompressFn
    config: type
    finetune: bool  # whether the harness fine-tunes the result for --epochs
    sweep_defaults: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # e.g. always sweep the control too
    finalize: Callable[[nn.Module], nn.Module] | None = None  # after fine-tuning, before saving (e.g. drop masks)
    finetune_epochs: int = 3  # default --epochs: what this method needs to recover, measured (see README)

    @property
    def description(self) -> str:
        return (self.fn.__doc__ or "").strip().splitlines()[0] if self.fn.__doc__ else ""


_REGISTRY: dict[str, Compressor] = {}


def register(name: str, config: type, finetune: bool = True,
             sweep_defaults: dict[str, tuple[Any, ...]] | None = None,
             finalize: Callable[[nn.Module], nn.Module] | None = None,
             finetune_epochs: int = 3) -> Callable[[CompressFn], CompressFn]:
    def wrap(fn: CompressFn) -> CompressFn:
        if name in _REGISTRY:
            raise ValueError(f"compressor {name!r} is registered twice")
        _REGISTRY[name] = Compressor(name, fn, config, finetune, dict(sweep_defaults or {}), finalize,
                                     finetune_epochs)
        return fn

    return wrap


def get(name: str) -> Compressor:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise CompressError(f"unknown compressor {name!r}: choose one of {', '.join(names())}") from None


def names() -> list[str]:
    return sorted(_REGISTRY)


# Every compressor module, imported explicitly (no discovery magic).
from compress.compressors import pruning, slim_head  # noqa: E402,F401
