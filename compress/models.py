"""VGG16 models described by a small spec, so every model we save can be rebuilt and loaded.

A `ModelSpec` names the layer widths; `build` turns it into torchvision's `VGG` class.
With the default widths it is exactly `torchvision.models.vgg16(num_classes=C)`, i.e. the
seeds' "replace classifier[6]" model. Slimmed heads and (later) pruned widths are the
same class with other numbers, so a saved checkpoint needs no pickled code to load.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models.vgg import VGG, make_layers

from compress.errors import CompressError
from compress.store.atomic import atomic_open

VGG16_WIDTHS: tuple[int, ...] = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
POOL_AFTER = (1, 3, 6, 9, 12)  # conv indices followed by a 2x2 max-pool (VGG16 cfg "D")
ARCHS = ("vgg16", "vgg16_bn")  # what a baseline can be
# Students and converted models. Each is fully described by its spec, so it saves and loads the same way.
VGG11_WIDTHS: tuple[int, ...] = (64, 128, 256, 256, 512, 512, 512, 512)  # VGG cfg "A"
POOLS = {"vgg16": POOL_AFTER, "vgg16_bn": POOL_AFTER, "vgg16_dw": POOL_AFTER, "vgg11_bn": (0, 1, 3, 5, 7)}
ALL_ARCHS = (*ARCHS, "vgg16_dw", "vgg11_bn", "seed-student")
CHECKPOINT_FORMAT = "compress-checkpoint/1"
MAX_WIDTH, MAX_CLASSES = 65_536, 1_000_000  # a spec past these is damaged, not a model


def _whole(v: Any, low: int, high: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high
DYNAMIC_INT8 = "torch-dynamic-int8-linear"  # extra["quantization"] of a PyTorch dynamic-int8 checkpoint
DYNAMIC_INT8_BACKEND = "pytorch dynamic int8 (Linear layers; convolutions fp32)"  # what its rows say ran
HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}  # extra["precision"] of a half-precision checkpoint


class Cast(nn.Module):
    """A model in half precision behind an input cast; returns fp32 logits so every scorer reads them alike."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = model.to(dtype)
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.dtype)).float()


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model's skeleton before loading its weights."""

    arch: str = "vgg16"
    num_classes: int = 10
    conv_widths: tuple[int, ...] = VGG16_WIDTHS
    head: str = "mlp"  # "mlp": flatten 7x7 -> hidden layers -> C;  "gap": global average pool -> C
    hidden: tuple[int, ...] = (4096, 4096)
    dropout: float = 0.5
    keep_first: bool = False  # vgg16_dw: the first convolution stays a full 3x3 convolution
    input_size: int | None = None  # seed-student only: its first linear layer is sized for the input

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> "ModelSpec":
        """A spec read from a file, validated as data first: a damaged checkpoint is one clear error."""
        if not isinstance(d, dict):
            raise CompressError(f"the checkpoint's model spec is a {type(d).__name__}, not a mapping")
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise CompressError(f"the checkpoint's model spec has unknown field(s) {', '.join(map(str, unknown))}")
        d = dict(d)
        for key in ("conv_widths", "hidden"):
            if key in d:
                if not isinstance(d[key], (list, tuple)) or not all(_whole(v, 1, MAX_WIDTH) for v in d[key]):
                    raise CompressError(f"the checkpoint's model spec has {key}={d[key]!r}: expected a list of "
                                        f"whole numbers from 1 to {MAX_WIDTH}")
                d[key] = tuple(int(v) for v in d[key])
        checks = {"arch": lambda v: v in ALL_ARCHS, "num_classes": lambda v: _whole(v, 1, MAX_CLASSES),
                  "head": lambda v: v in ("mlp", "gap"), "keep_first": lambda v: isinstance(v, bool),
                  "dropout": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1,
                  "input_size": lambda v: v is None or _whole(v, 1, 100_000)}
        for key, ok in checks.items():
            if key in d and not ok(d[key]):
                raise CompressError(f"the checkpoint's model spec has {key}={d[key]!r}, which no model can have")
        return cls(**d)


def separable_spec(spec: ModelSpec, head: str, hidden: tuple[int, ...], keep_first: bool) -> ModelSpec:
    """The depthwise-separable twin of `spec`: head "keep" keeps the baseline's classifier shape."""
    head_hidden = {"keep": (spec.head, spec.hidden), "mlp": ("mlp", hidden), "gap": ("gap", ())}[head]
    return replace(spec, arch="vgg16_dw", head=head_hidden[0], hidden=head_hidden[1], keep_first=keep_first)


def _cfg(widths: tuple[int, ...], pools: tuple[int, ...] = POOL_AFTER) -> list[int | str]:
    cfg: list[int | str] = []
    for i, w in enumerate(widths):
        cfg.append(w)
        if i in pools:
            cfg.append("M")
    return cfg


def separable_layers(widths: tuple[int, ...], pools: tuple[int, ...], keep_first: bool) -> nn.Sequential:
    """MobileNet's block for every 3x3 conv: depthwise 3x3-BN-ReLU, then pointwise 1x1-BN-ReLU."""
    layers: list[nn.Module] = []
    c_in = 3
    for i, w in enumerate(widths):
        if i == 0 and keep_first:
            layers += [nn.Conv2d(c_in, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        else:
            layers += [nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False), nn.BatchNorm2d(c_in),
                       nn.ReLU(inplace=True), nn.Conv2d(c_in, w, 1, bias=False), nn.BatchNorm2d(w),
                       nn.ReLU(inplace=True)]
        if i in pools:
            layers.append(nn.MaxPool2d(2, 2))
        c_in = w
    for m in layers:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return nn.Sequential(*layers)


class SeedStudent(nn.Module):
    """Seed 004's student: conv(3,32)-pool-conv(32,64)-pool-fc(256)-fc(C), sized for its input."""

    def __init__(self, spec: "ModelSpec") -> None:
        super().__init__()
        if len(spec.conv_widths) != 2 or len(spec.hidden) != 1 or not spec.input_size:
            raise CompressError("seed-student needs 2 conv widths, 1 hidden width and an input size")
        w0, w1 = spec.conv_widths
        self.features = nn.Sequential(nn.Conv2d(3, w0, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
                                      nn.Conv2d(w0, w1, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2))
        side = spec.input_size // 4
        self.classifier = nn.Sequential(nn.Linear(w1 * side * side, spec.hidden[0]), nn.ReLU(inplace=True),
                                        nn.Linear(spec.hidden[0], spec.num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def make_head(in_features: int, hidden: tuple[int, ...], num_classes: int, dropout: float) -> nn.Sequential:
    """Linear-ReLU-Dropout per hidden layer, then the class layer (torchvision's layout)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_features, width), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        in_features = width
    layers.append(nn.Linear(in_features, num_classes))
    head = nn.Sequential(*layers)
    for m in head.modules():  # torchvision's VGG init for linear layers
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.constant_(m.bias, 0)
    return head


def set_head(model: VGG, spec: ModelSpec) -> None:
    """Replace avgpool+classifier of `model` in place according to `spec`."""
    last = spec.conv_widths[-1]
    if spec.head == "gap":
        model.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        model.classifier = make_head(last, spec.hidden, spec.num_classes, spec.dropout)
    elif spec.head == "mlp":
        model.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        model.classifier = make_head(last * 7 * 7, spec.hidden, spec.num_classes, spec.dropout)
    else:
        raise CompressError(f"unknown head {spec.head!r}: expected 'mlp' or 'gap'")


def build(spec: ModelSpec) -> nn.Module:
    """A freshly initialised model with the shapes in `spec`."""
    if spec.arch not in ALL_ARCHS:
        raise CompressError(f"unknown --arch {spec.arch!r}: expected one of {', '.join(ARCHS)}")
    if spec.arch == "seed-student":
        return SeedStudent(spec)
    pools = POOLS[spec.arch]
    if len(spec.conv_widths) != max(pools) + 1:
        raise CompressError(f"a {spec.arch} has {max(pools) + 1} convolutions, the spec lists "
                            f"{len(spec.conv_widths)}")
    if spec.arch == "vgg16_dw":
        features = separable_layers(spec.conv_widths, pools, spec.keep_first)
    else:
        features = make_layers(_cfg(spec.conv_widths, pools), batch_norm=spec.arch.endswith("_bn"))
    model = VGG(features, num_classes=spec.num_classes, init_weights=True)
    set_head(model, spec)
    return model


def save_checkpoint(model: nn.Module, spec: ModelSpec, path: Path, extra: dict[str, Any] | None = None) -> None:
    """One file holding spec + state dict; loadable with `torch.load(weights_only=True)`."""
    state = model.state_dict()
    cpu_state = OrderedDict((k, v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in state.items())
    cpu_state._metadata = getattr(state, "_metadata", None)  # type: ignore[attr-defined]  # versions of quantized modules
    payload = {"format": CHECKPOINT_FORMAT, "spec": spec.to_dict(), "extra": extra or {}, "state_dict": cpu_state}
    with atomic_open(Path(path), "wb") as fh:
        torch.save(payload, fh)


# ---------------------------------------------------------------------------------------
# Importing checkpoints we did not write: torchvision layout, seed 004's hand-built layout.
# ---------------------------------------------------------------------------------------

@dataclass
class Imported:
    model: nn.Module
    spec: ModelSpec
    layout: str  # "compress" | "torchvision" | "seed-004"
    extra: dict[str, Any] = field(default_factory=dict)


def require_file(path: Path) -> Path:
    if not path.exists():
        raise CompressError(f"checkpoint {path} does not exist: pass the path of a .pth/.pt file")
    if not path.is_file():
        raise CompressError(f"checkpoint {path} is not a file: pass the path of a .pth/.pt file")
    return path


def read_checkpoint(path: Path, trust_pickle: bool = False) -> Any:
    """torch.load with weights_only=True; a full pickled model only with trust_pickle."""
    path = require_file(Path(path))
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
        raise CompressError(f"{path} is not a PyTorch checkpoint torch.load can read ({type(exc).__name__}: "
                            f"{detail}); expected a file written by torch.save") from None


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


_SEED_KEY = re.compile(r"^block(\d+)\.(\d+)\.(weight|bias|running_mean|running_var|num_batches_tracked)$")


def _layer_order(keys: list[str], pattern: re.Pattern[str]) -> list[tuple[int, int]]:
    seen = sorted({(int(m.group(1)), int(m.group(2))) for k in keys if (m := pattern.match(k))})
    return seen


def _seed004_to_torchvision(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map seed 004's block1..block5 / classifier.{0,2,4} names onto torchvision's by order."""
    layers = _layer_order(list(sd), _SEED_KEY)
    bn = any(k.endswith("running_mean") for k in sd)
    # torchvision index of each conv (and its BN) in `features`
    tv_index: list[int] = []
    i = 0
    for c in range(13):
        tv_index.append(i)
        i += 3 if bn else 2
        if c in POOL_AFTER:
            i += 1
    convs = [(b, j) for (b, j) in layers if sd.get(f"block{b}.{j}.weight") is not None
             and sd[f"block{b}.{j}.weight"].dim() == 4]
    out: dict[str, torch.Tensor] = {}
    for n, (b, j) in enumerate(convs):
        if n >= 13:
            break
        for p in ("weight", "bias"):
            if f"block{b}.{j}.{p}" in sd:
                out[f"features.{tv_index[n]}.{p}"] = sd[f"block{b}.{j}.{p}"]
        if bn:
            for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                if f"block{b}.{j + 1}.{p}" in sd:
                    out[f"features.{tv_index[n] + 1}.{p}"] = sd[f"block{b}.{j + 1}.{p}"]
    linears = sorted({int(k.split(".")[1]) for k in sd if k.startswith("classifier.") and k.endswith("weight")})
    for n, j in enumerate(linears):
        for p in ("weight", "bias"):
            if f"classifier.{j}.{p}" in sd:
                out[f"classifier.{3 * n}.{p}"] = sd[f"classifier.{j}.{p}"]
    return out


def infer_spec(sd: dict[str, torch.Tensor], path: Path) -> ModelSpec:
    """Read widths, head and class count off the tensor shapes of a torchvision-layout dict."""
    conv_keys = sorted((k for k in sd if k.startswith("features.") and k.endswith(".weight") and sd[k].dim() == 4),
                       key=lambda k: int(k.split(".")[1]))
    lin_keys = sorted((k for k in sd if k.startswith("classifier.") and k.endswith(".weight") and sd[k].dim() == 2),
                      key=lambda k: int(k.split(".")[1]))
    if not conv_keys or not lin_keys:
        sample = ", ".join(list(sd)[:4])
        raise CompressError(
            f"{path} is not a VGG16 state dict: expected keys like features.0.weight (torchvision) or "
            f"block1.0.weight (seed 004 layout), found {sample}, ...")
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
               trust_pickle: bool = False, half: bool = False) -> Imported:
    """Load any checkpoint we understand; explain precisely when it does not fit.

    A half-precision checkpoint (`run precision`) comes back in its precision (a `Cast`), never silently
    as fp32; only callers that measure it as it is (`half=True`) may load one."""
    path = Path(path)
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
        if any(_SEED_KEY.match(k) for k in sd):
            sd, layout = _seed004_to_torchvision(sd), "seed-004"
        spec = infer_spec(sd, path)
    if num_classes is not None and num_classes != spec.num_classes:
        raise CompressError(f"{path} was trained for {spec.num_classes} classes, but --num-classes is "
                            f"{num_classes}: drop --num-classes or pass {spec.num_classes}")
    if arch is not None and arch != spec.arch:
        raise CompressError(f"{path} is a {spec.arch} checkpoint ({'with' if spec.arch == 'vgg16_bn' else 'without'} "
                            f"BatchNorm), but --arch is {arch}: pass --arch {spec.arch}")
    _check_finite(sd, path)
    model = build(spec)
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
        raise CompressError(f"{path} does not fit {spec.arch} ({layout} layout, {spec.num_classes} classes): "
                            + "; ".join(parts))
    model.load_state_dict(sd)
    precision = extra.get("precision")
    if precision in HALF:
        if not half:
            raise CompressError(f"{path} is a {precision} checkpoint (made by `run precision`): it cannot be a "
                                "baseline or be compressed further; measure it with `compress measure --weights`, "
                                "or start from its fp32 source")
        return Imported(model=Cast(model, HALF[precision]).eval(), spec=spec, layout=layout, extra=extra)
    return Imported(model=model, spec=spec, layout=layout, extra=extra)


def _check_finite(sd: dict[str, Any], path: Path) -> None:
    """A checkpoint with NaN or infinite weights is broken, not a model to measure (it scores like chance)."""
    bad = [k for k, v in sd.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]
    if bad:
        raise CompressError(f"{path} holds non-finite weights (NaN or infinity) in {len(bad)} tensor(s), first "
                            f"{bad[0]}: the training that wrote it diverged; use an earlier checkpoint")


def _diff_keys(expected: dict[str, Any], found: dict[str, Any]) -> tuple[list[str], list[str]]:
    return sorted(set(expected) - set(found)), sorted(set(found) - set(expected))

