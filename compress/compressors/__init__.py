"""Registry of compressors: a dict plus a decorator (torchvision's register_model pattern).

A compressor is a function `(model, spec, config, ctx) -> (model, spec)` with a typed,
frozen dataclass config whose fields become its CLI flags. A compressor whose result is not
an fp32 PyTorch module (int8) returns an `Artifact` instead, which says how it runs, so the
harness measures the artifact itself and never its fp32 source. Nothing downstream (store,
report) knows which compressor ran; adding one means adding one module here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Union

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
    run_dir: Path  # where this run's files go (model, ONNX exports)
    threads: int | None = None  # the measurement thread count (None: all cores)
    keep_onnx: bool = False  # --export-onnx: keep intermediate ONNX files


@dataclass(frozen=True)
class Artifact:
    """A compressed model that is not an fp32 nn.Module, described by how it runs.

    Exactly one of `onnx` (run by ONNX Runtime) and `module` (run by PyTorch eager on CPU)
    is set; latency and accuracy come from it. Params and MACs still come from the fp32
    model it was made from: quantization changes the bytes per weight, not their number.
    """

    backend: str  # stated in the row, e.g. "onnxruntime int8 QDQ S8S8 per-channel (minmax)"
    file: Path  # the deployable file; its bytes are the size column
    onnx: Path | None = None
    module: nn.Module | None = None
    gpu_note: str | None = "n/a (CPU int8 backend)"  # None: also time it on the GPU when there is one
    dtype: str = "int8"
    source_onnx: Path | None = None  # the fp32 ONNX file it came from, when there is one

    def __post_init__(self) -> None:
        if (self.onnx is None) == (self.module is None):
            raise ValueError("an Artifact runs either as an ONNX file or as a PyTorch module")

    @classmethod
    def fp32(cls, model: nn.Module, file: Path) -> "Artifact":
        """The ordinary case: an fp32 PyTorch model saved as a checkpoint."""
        return cls(backend="pytorch fp32", file=file, module=model, gpu_note=None, dtype="float32")


Output = Union[tuple[nn.Module, ModelSpec], Artifact]


class CompressFn(Protocol):
    def __call__(self, model: nn.Module, spec: ModelSpec, config: Any, ctx: Context) -> Output:
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
    finetune_lr: float | None = None  # default --lr when not the fine-tuning one (students trained from scratch)

    @property
    def description(self) -> str:
        return (self.fn.__doc__ or "").strip().splitlines()[0] if self.fn.__doc__ else ""


_REGISTRY: dict[str, Compressor] = {}


def register(name: str, config: type, finetune: bool = True,
             sweep_defaults: dict[str, tuple[Any, ...]] | None = None,
             finalize: Callable[[nn.Module], nn.Module] | None = None,
             finetune_epochs: int = 3, finetune_lr: float | None = None) -> Callable[[CompressFn], CompressFn]:
    """Register `fn` under `name`. Its config may also define, optionally:

    - a `distillation` property returning `compress.distill.KD` (or None): train against the baseline;
    - a `control()` method returning the config of the control run (or None), run and stored beside it.
    """
    def wrap(fn: CompressFn) -> CompressFn:
        if name in _REGISTRY:
            raise ValueError(f"compressor {name!r} is registered twice")
        _REGISTRY[name] = Compressor(name, fn, config, finetune, dict(sweep_defaults or {}), finalize,
                                     finetune_epochs, finetune_lr)
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
from compress.compressors import depthwise, distillation, pruning, quantization, slim_head  # noqa: E402,F401
