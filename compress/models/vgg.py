"""VGG16 models described by a small spec, so every model we save can be rebuilt and loaded.

A `ModelSpec` names the layer widths; `build` turns it into torchvision's `VGG` class.
With the default widths it is exactly `torchvision.models.vgg16(num_classes=C)`, i.e. the
seeds' "replace classifier[6]" model. Slimmed heads and (later) pruned widths are the
same class with other numbers, so a saved checkpoint needs no pickled code to load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn
from torchvision.models.vgg import VGG, make_layers

from compress.errors import CompressError

VGG16_WIDTHS: tuple[int, ...] = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
POOL_AFTER = (1, 3, 6, 9, 12)  # conv indices followed by a 2x2 max-pool (VGG16 cfg "D")
ARCHS = ("vgg16", "vgg16_bn")  # what a baseline can be


# Students and converted models. Each is fully described by its spec, so it saves and loads the same way.
VGG11_WIDTHS: tuple[int, ...] = (64, 128, 256, 256, 512, 512, 512, 512)  # VGG cfg "A"
POOLS = {"vgg16": POOL_AFTER, "vgg16_bn": POOL_AFTER, "vgg16_dw": POOL_AFTER, "vgg11_bn": (0, 1, 3, 5, 7)}
ALL_ARCHS = (*ARCHS, "vgg16_dw", "vgg11_bn", "seed-student")
MAX_WIDTH, MAX_CLASSES = 65_536, 1_000_000  # a spec past these is damaged, not a model


def _whole(v: Any, low: int, high: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


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
    # head "mlp" only: the side of the map flattened into the first linear layer, kept as the model was built
    # (a Keras VGG16 built for 32 px flattens 1x1x512); None: adaptive-pooled to 7x7, as torchvision's VGG
    flatten_side: int | None = None
    # one rank per classifier Linear (0: dense): a layer of rank r is Linear(in, r, no bias) then Linear(r, out),
    # the two factors of its truncated SVD (low-rank); () : every layer dense
    head_ranks: tuple[int, ...] = ()

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
        for key in ("conv_widths", "hidden", "head_ranks"):
            if key in d:
                if not isinstance(d[key], (list, tuple)) or not all(_whole(v, 0 if key == "head_ranks" else 1,
                                                                           MAX_WIDTH) for v in d[key]):
                    raise CompressError(f"the checkpoint's model spec has {key}={d[key]!r}: expected a list of "
                                        f"whole numbers from 1 to {MAX_WIDTH}")
                d[key] = tuple(int(v) for v in d[key])
        checks = {"arch": lambda v: v in ALL_ARCHS, "num_classes": lambda v: _whole(v, 1, MAX_CLASSES),
                  "head": lambda v: v in ("mlp", "gap"), "keep_first": lambda v: isinstance(v, bool),
                  "dropout": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1,
                  "input_size": lambda v: v is None or _whole(v, 1, 100_000),
                  "flatten_side": lambda v: v is None or _whole(v, 1, 1_000)}
        for key, ok in checks.items():
            if key in d and not ok(d[key]):
                raise CompressError(f"the checkpoint's model spec has {key}={d[key]!r}, which no model can have")
        return cls(**d)


def separable_spec(spec: ModelSpec, head: str, hidden: tuple[int, ...], keep_first: bool) -> ModelSpec:
    """The depthwise-separable twin of `spec`: head "keep" keeps the baseline's classifier shape."""
    head_hidden = {"keep": (spec.head, spec.hidden), "mlp": ("mlp", hidden), "gap": ("gap", ())}[head]
    ranks = spec.head_ranks if head == "keep" else ()
    return replace(spec, arch="vgg16_dw", head=head_hidden[0], hidden=head_hidden[1], keep_first=keep_first,
                   head_ranks=ranks)


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


def head_widths(head: str, hidden: tuple[int, ...]) -> tuple[int, ...]:
    """The hidden widths a head really has: none for `gap` (so a stored config stays honest), at least one
    positive width for `mlp`."""
    if head != "mlp":
        return ()
    if not hidden:
        raise CompressError("--hidden is empty: an mlp head needs at least one hidden width (e.g. --hidden 1024,256);"
                            " for a head without hidden layers pass --head gap")
    if any(w <= 0 for w in hidden):
        raise CompressError(f"--hidden widths must be positive, got {','.join(map(str, hidden))}")
    return hidden


def linear(in_features: int, out_features: int, rank: int = 0) -> nn.Module:
    """A dense layer, or (rank > 0) its two low-rank factors: in -> rank (no bias) -> out."""
    if rank <= 0:
        return nn.Linear(in_features, out_features)
    return nn.Sequential(nn.Linear(in_features, rank, bias=False), nn.Linear(rank, out_features))


def make_head(in_features: int, hidden: tuple[int, ...], num_classes: int, dropout: float,
              ranks: tuple[int, ...] = ()) -> nn.Sequential:
    """Linear-ReLU-Dropout per hidden layer, then the class layer (torchvision's layout); `ranks` factorise them."""
    ranks = tuple(ranks) + (0,) * (len(hidden) + 1 - len(ranks))
    layers: list[nn.Module] = []
    for width, rank in zip(hidden, ranks):
        layers += [linear(in_features, width, rank), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        in_features = width
    layers.append(linear(in_features, num_classes, ranks[len(hidden)]))
    head = nn.Sequential(*layers)
    for m in head.modules():  # torchvision's VGG init for linear layers
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            if m.bias is not None:  # the first factor of a low-rank layer has none
                nn.init.constant_(m.bias, 0)
    return head


def set_head(model: VGG, spec: ModelSpec) -> None:
    """Replace avgpool+classifier of `model` in place according to `spec`."""
    last = spec.conv_widths[-1]
    if spec.head == "gap":
        model.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        model.classifier = make_head(last, spec.hidden, spec.num_classes, spec.dropout, spec.head_ranks)
    elif spec.head == "mlp" and spec.flatten_side is not None:  # the map as it is, no pooling to 7x7
        model.avgpool = nn.Identity()
        model.classifier = make_head(last * spec.flatten_side ** 2, spec.hidden, spec.num_classes, spec.dropout,
                                     spec.head_ranks)
    elif spec.head == "mlp":
        model.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        model.classifier = make_head(last * 7 * 7, spec.hidden, spec.num_classes, spec.dropout, spec.head_ranks)
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
