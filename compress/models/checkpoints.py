"""Checkpoints: saving ours, and reading yours (torchvision's layout, seed 004's, ours) safely.

State dicts load with `weights_only=True`; a whole pickled model only behind --trust-pickle, since
unpickling runs code. Every file is checked (finite weights, keys, shapes) before it becomes a model.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.errors import CompressError, printable
from compress.models import keras_convert, keras_read
from compress.models.seed004 import SEED_KEY, to_torchvision
from compress.models.vgg import HALF, Cast, ModelSpec, build
from compress.store.atomic import atomic_open

CHECKPOINT_FORMAT = "compress-checkpoint/1"
DYNAMIC_INT8 = "torch-dynamic-int8-linear"  # extra["quantization"] of a PyTorch dynamic-int8 checkpoint
DYNAMIC_INT8_BACKEND = "pytorch dynamic int8 (Linear layers; convolutions fp32)"  # what its rows say ran


def save_checkpoint(model: nn.Module, spec: ModelSpec, path: Path, extra: dict[str, Any] | None = None) -> None:
    """One file holding spec + state dict; loadable with `torch.load(weights_only=True)`."""
    state = model.state_dict()
    cpu_state = OrderedDict((k, v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in state.items())
    cpu_state._metadata = getattr(state, "_metadata", None)  # type: ignore[attr-defined]  # versions of quantized modules
    payload = {"format": CHECKPOINT_FORMAT, "spec": spec.to_dict(), "extra": extra or {}, "state_dict": cpu_state}
    with atomic_open(Path(path), "wb") as fh:
        torch.save(payload, fh)


@dataclass
class Imported:
    model: nn.Module
    spec: ModelSpec
    layout: str  # "compress" | "torchvision" | "seed-004"
    extra: dict[str, Any] = field(default_factory=dict)


def require_file(path: Path) -> Path:
    if keras_read.saved_model_folder(path):
        raise CompressError(f"{path} is a TensorFlow SavedModel folder: load it in TensorFlow and save it as one "
                            "file with model.save('model.keras'), then pass that file")
    if not path.exists():
        raise CompressError(f"checkpoint {path} does not exist: pass the path of a .pth/.pt file")
    if not path.is_file():
        raise CompressError(f"checkpoint {path} is not a file: pass the path of a .pth/.pt file")
    return path


def looks_like(path: Path) -> str:
    """What a file is by its first bytes, for messages about a file that is not what its name says."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if not head:
        return "an empty file"
    if head.startswith(keras_read.HDF5_MAGIC):
        return "an HDF5 file"
    if head.startswith(keras_read.ZIP_MAGIC):
        return "a zip archive"
    if head.startswith(b"\x1f\x8b"):
        return "a gzip file"
    if head.startswith(b"\x80"):
        return "a Python pickle"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "a binary file of another kind"
    return "a text file" if all(c.isprintable() or c in "\r\n\t" for c in text) else "a binary file of another kind"


def read_checkpoint(path: Path, trust_pickle: bool = False) -> Any:
    """torch.load with weights_only=True; a full pickled model only with trust_pickle."""
    path = require_file(Path(path))
    if path.suffix.lower() in keras_read.SUFFIXES:  # named like a Keras file, but not one (is_keras said no)
        raise CompressError(f"{path} is named like a Keras file but is {looks_like(path)}, not an HDF5 file or a "
                            ".keras archive: pass the file model.save / save_weights wrote (is this one truncated, "
                            "or renamed?)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ... by case
        msg = str(exc)
        if "Unsupported global" in msg:  # a pickled class (e.g. a whole nn.Module), not just tensors
            if not trust_pickle:
                raise CompressError(
                    f"{path} holds pickled Python objects (a whole model, not a state dict); "
                    "unpickling runs arbitrary code, so it is refused. Save model.state_dict() "
                    "instead, or pass --trust-pickle if you trust this file") from None
            try:
                return torch.load(path, map_location="cpu", weights_only=False)
            except Exception as exc2:
                raise CompressError(f"cannot load {path} even as a trusted pickle: {exc2}") from None
        detail = next((ln.strip() for ln in msg.splitlines()[1:] if ln.strip() and "error" not in ln.lower()),
                      msg.splitlines()[0] if msg else "no detail")
        raise CompressError(f"{path} is not a PyTorch checkpoint torch.load can read: it is {looks_like(path)} "
                            f"({type(exc).__name__}: {printable(detail)[:200]}); expected a file written by torch.save"
                            ) from None


def state_dict_of(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):  # common training-script wrappers
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CompressError(f"{path} does not hold a state dict (a mapping of names to tensors); "
                            f"found {type(obj).__name__}")
    return {re.sub(r"^module\.", "", k): v for k, v in obj.items()}


def infer_spec(sd: dict[str, torch.Tensor], path: Path) -> ModelSpec:
    """Read widths, head and class count off the tensor shapes of a torchvision-layout dict."""
    conv_keys = sorted((k for k in sd if k.startswith("features.") and k.endswith(".weight") and sd[k].dim() == 4),
                       key=lambda k: int(k.split(".")[1]))
    lin_keys = sorted((k for k in sd if k.startswith("classifier.") and k.endswith(".weight") and sd[k].dim() == 2),
                      key=lambda k: int(k.split(".")[1]))
    if not conv_keys or not lin_keys:
        sample = ", ".join(f"{k} {tuple(v.shape) if hasattr(v, 'shape') else type(v).__name__}" for k, v in
                           list(sd.items())[:4])
        lacking = "4-D convolution weights features.<i>.weight" if not conv_keys else \
            "2-D classifier weights classifier.<i>.weight"
        raise CompressError(
            f"{path} is not a VGG16 state dict: it has no {lacking} (torchvision's layout; seed 004's is "
            f"block1.0.weight ...); its first keys: {printable(sample)[:300]}")
    if len(conv_keys) != 13:
        raise CompressError(f"{path} has {len(conv_keys)} convolutions; VGG16 has 13 (is it another VGG depth?)")
    widths = tuple(int(sd[k].shape[0]) for k in conv_keys)
    bn = any(k.endswith("running_mean") for k in sd)
    first_in = int(sd[lin_keys[0]].shape[1])
    head = "gap" if first_in == widths[-1] else "mlp"
    hidden = tuple(int(sd[k].shape[0]) for k in lin_keys[:-1])
    return ModelSpec(arch="vgg16_bn" if bn else "vgg16", num_classes=int(sd[lin_keys[-1]].shape[0]),
                     conv_widths=widths, head=head, hidden=hidden)


def load_model(path: Path, arch: str | None = None, num_classes: int | None = None,
               trust_pickle: bool = False, half: bool = False, image_size: int | None = None) -> Imported:
    """Load any checkpoint we understand (PyTorch, or a Keras VGG16 converted exactly); explain precisely when it
    does not fit. `image_size` is the input a Keras file must have been built for (or, weights only, is given).

    A half-precision checkpoint (`run precision`) comes back in its precision (a `Cast`), never silently
    as fp32; only callers that measure it as it is (`half=True`) may load one."""
    path = require_file(Path(path))
    if keras_read.is_keras(path):
        return _keras(path, arch, num_classes, image_size)
    obj = read_checkpoint(path, trust_pickle)
    extra: dict[str, Any] = {}
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        if "spec" not in obj or not isinstance(obj.get("state_dict"), dict):
            raise CompressError(f"{path} says it is a compress checkpoint but has no "
                                f"{'spec' if 'spec' not in obj else 'state dict'}: it is damaged; measure or "
                                "compress the run again")
        try:
            spec = ModelSpec.from_dict(obj["spec"])
        except CompressError as exc:
            raise CompressError(f"{path}: {exc}") from None
        sd, layout, extra = obj["state_dict"], "compress", obj.get("extra") or {}
        if not isinstance(extra, dict):
            extra = {}
        if extra.get("quantization") == DYNAMIC_INT8:  # rebuild the quantized skeleton, then load
            qmodel = torch.ao.quantization.quantize_dynamic(build(spec).eval(), {nn.Linear}, dtype=torch.qint8)
            qmodel.load_state_dict(sd)
            return Imported(model=qmodel, spec=spec, layout="compress", extra=extra)
    else:
        sd = state_dict_of(obj, path)
        layout = "torchvision"
        if any(SEED_KEY.match(k) for k in sd):
            sd, layout = to_torchvision(sd), "seed-004"
        spec = infer_spec(sd, path)
    if num_classes is not None and num_classes != spec.num_classes:
        raise CompressError(f"{path} was trained for {spec.num_classes} classes, but --num-classes is "
                            f"{num_classes}: drop --num-classes or pass {spec.num_classes}")
    if arch is not None and arch != spec.arch:
        raise CompressError(f"{path} is a {spec.arch} checkpoint ({'with' if spec.arch == 'vgg16_bn' else 'without'} "
                            f"BatchNorm), but --arch is {arch}: pass --arch {spec.arch}")
    _check_finite(sd, path)
    model = build(spec)
    _check_fits(model, sd, path, f"{spec.arch} ({layout} layout, {spec.num_classes} classes)")
    model.load_state_dict(sd)
    precision = extra.get("precision")
    if precision in HALF:
        if not half:
            raise CompressError(f"{path} is a {precision} checkpoint (made by `run precision`): it cannot be a "
                                "baseline or be compressed further; measure it with `compress measure --weights`, "
                                "or start from its fp32 source")
        return Imported(model=Cast(model, HALF[precision]).eval(), spec=spec, layout=layout, extra=extra)
    return Imported(model=model, spec=spec, layout=layout, extra=extra)


def _keras(path: Path, arch: str | None, num_classes: int | None, image_size: int | None) -> Imported:
    converted, kf = keras_convert.load(path, image_size)
    if arch not in (None, "vgg16"):
        raise CompressError(f"{path} is a Keras VGG16 without BatchNorm, but --arch is {arch}: drop --arch")
    if num_classes is not None and num_classes != converted.spec.num_classes:
        raise CompressError(f"{path} was trained for {converted.spec.num_classes} classes, but --num-classes is "
                            f"{num_classes}: drop --num-classes or pass {converted.spec.num_classes}")
    return Imported(converted.model, converted.spec, f"keras ({kf.kind})", {
        "image_size": converted.input_size, "keras": {"normalization": converted.normalization,
                                                      "input_size": converted.input_size, "notes": converted.notes}})


def _check_fits(model: nn.Module, sd: dict[str, Any], path: Path, what: str) -> None:
    """Every key of the model in the file and nothing else, each of the model's shape; else one line naming them."""
    missing, unexpected = _diff_keys(model.state_dict(), sd)
    mismatched = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in model.state_dict().items() if k in sd and sd[k].shape != v.shape]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}")
        if mismatched:
            parts.append(f"shape mismatches {mismatched[:3]}")
        raise CompressError(f"{path} does not fit {what}: " + "; ".join(parts))


def _check_finite(sd: dict[str, Any], path: Path) -> None:
    """A checkpoint with NaN or infinite weights is broken, not a model to measure (it scores like chance)."""
    bad = [k for k, v in sd.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]
    if bad:
        raise CompressError(f"{path} holds non-finite weights (NaN or infinity) in {len(bad)} tensor(s), first "
                            f"{bad[0]}: the training that wrote it diverged; use an earlier checkpoint")


def _diff_keys(expected: dict[str, Any], found: dict[str, Any]) -> tuple[list[str], list[str]]:
    return sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
