"""The compressor registry: a dict plus a decorator (torchvision's `register_model` pattern).

A compressor is a function `(model, spec, config, ctx) -> (model, spec) | Artifact` with a
typed, frozen dataclass config whose fields become its CLI flags. What the rest of the suite
needs to know about a compressor (how its result is fine-tuned, which steps `run all` makes
of it, its place in the plan) is declared here, at registration, and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Union

from torch import nn

from compress.errors import CompressError
from compress.models.artifact import Artifact
from compress.models.vgg import ModelSpec
from compress.training.config import FinetuneConfig


@dataclass
class Context:
    """What a compressor may use besides the model: data, device, where its files go."""

    loaders: Any  # compress.data.datasets.Loaders
    device: Any  # torch.device
    num_classes: int
    image_size: int
    run_dir: Path  # where this run's files go (model, ONNX exports)
    threads: int | None = None  # the measurement thread count (None: all cores)
    keep_onnx: bool = False  # --export-onnx: keep intermediate ONNX files


@dataclass(frozen=True)
class Stored:
    """What a compressor's `resolve` may read before it runs: the baseline, and results stored beside it."""

    model: nn.Module  # the model it will compress (the baseline, or the --from run)
    image_size: int
    sensitivity_dir: Path  # where `compress sensitivity` keeps its scans for this data
    baseline_path: Path  # the baseline checkpoint, in its cache folder
    from_row: str | None = None  # --from: the stored run it compresses (None: the baseline itself)

    @property
    def baseline_key(self) -> str:
        """The baseline's cache folder name: a scan is kept per baseline."""
        return self.baseline_path.parent.name

    @property
    def baseline_digest(self) -> str:
        """sha256 of the baseline's weights (hashed only when asked: a scan of other weights is refused)."""
        from compress.store.digest import file_digest

        return file_digest(self.baseline_path)


Output = Union[tuple[nn.Module, ModelSpec], Artifact]


class CompressFn(Protocol):
    def __call__(self, model: nn.Module, spec: ModelSpec, config: Any, ctx: Context) -> Output:
        ...


@dataclass(frozen=True)
class PlanOptions:
    """What `run all` lets the user change about the plan."""

    amounts: tuple[float, ...] = (0.3, 0.5, 0.7)  # the pruning sweep


@dataclass(frozen=True)
class Planned:
    """One step a compressor contributes to `run all`, with a rough cost for the time-left estimate.

    cost = model_cost * fine-tune epochs (twice when the config has a control run) + fixed,
    in baseline-epoch units: a 6-epoch fine-tune of VGG16 weighs more than 12 epochs of a tiny student.
    """

    label: str
    config: Any
    model_cost: float = 1.0  # one epoch of this model relative to one baseline epoch
    fixed: float = 1.0  # measuring, exporting, calibrating


PlanFn = Callable[[PlanOptions], list[Planned]]


AdaptFn = Callable[[Any, int], Any]  # (config, training images) -> config that fits the data


ResolveFn = Callable[[Any, Stored], Any]  # (config, what is stored) -> config with stored values filled in


@dataclass(frozen=True)
class Compressor:
    name: str
    fn: CompressFn
    config: type
    finetune: bool = True  # whether the pipeline trains the result (fine-tuning or training anew)
    sweep_defaults: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # e.g. always sweep the control too
    finalize: Callable[[nn.Module], nn.Module] | None = None  # after fine-tuning, before saving (e.g. drop masks)
    finetune_epochs: int = 3  # default --epochs: what this method needs to recover, measured (see README)
    finetune_lr: float | None = None  # default --lr when not the fine-tuning one (students trained from scratch)
    plan: PlanFn | None = None  # its `run all` steps; None: one step at the defaults
    adapt: AdaptFn | None = None  # shrink a default that does not fit a small training split
    order: int = 100  # place in `run all` (lower first)
    resolve: ResolveFn | None = None  # fill settings that come from stored results (per-layer amounts of a scan)
    head_only: bool = False  # changes the classifier alone: --freeze-features trains it on cached features

    @property
    def description(self) -> str:
        return (self.fn.__doc__ or "").strip().splitlines()[0] if self.fn.__doc__ else ""

    def finetune_config(self, **overrides: Any) -> FinetuneConfig:
        """The one place that decides how this compressor's result is trained (None values keep the default)."""
        if not self.finetune:
            return FinetuneConfig(epochs=0)
        chosen = {"epochs": self.finetune_epochs, **({"lr": self.finetune_lr} if self.finetune_lr else {})}
        chosen.update({k: v for k, v in overrides.items() if v is not None})
        return FinetuneConfig(**chosen)

    def planned(self, options: PlanOptions) -> list[Planned]:
        return self.plan(options) if self.plan is not None else [Planned(self.name, self.config())]

    def fit_to_data(self, config: Any, train_images: int) -> Any:
        return self.adapt(config, train_images) if self.adapt is not None else config

    def resolved(self, config: Any, stored: Stored) -> Any:
        """The config with what it takes from stored results filled in (the row records the filled-in values)."""
        return self.resolve(config, stored) if self.resolve is not None else config


_REGISTRY: dict[str, Compressor] = {}


def register(name: str, config: type, **declared: Any) -> Callable[[CompressFn], CompressFn]:
    """Register `fn` under `name`; `declared` sets the other `Compressor` fields (finetune, plan, ...)."""
    unknown = set(declared) - {f for f in Compressor.__dataclass_fields__} - {"name", "fn", "config"}
    if unknown:
        raise TypeError(f"register({name!r}): unknown declaration(s) {', '.join(sorted(unknown))}")

    def wrap(fn: CompressFn) -> CompressFn:
        if name in _REGISTRY:
            raise ValueError(f"compressor {name!r} is registered twice")
        _REGISTRY[name] = Compressor(name, fn, config, **declared)
        return fn

    return wrap


def get(name: str) -> Compressor:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise CompressError(f"unknown compressor {name!r}: choose one of {', '.join(names())}") from None


def names() -> list[str]:
    """Every registered compressor, alphabetically (for listings)."""
    return sorted(_REGISTRY)


def in_plan_order() -> list[Compressor]:
    """Every registered compressor in `run all` order."""
    return sorted(_REGISTRY.values(), key=lambda c: (c.order, c.name))
