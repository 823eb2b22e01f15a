"""A Keras VGG16 converted exactly into the suite's VGG: the function it computes is kept.

Kernels HWIO -> OIHW; the first dense layer's input rows permuted from Keras's channels-last
`Flatten` order (H, W, C) to PyTorch's (C, H, W); a softmax output dropped (the suite's argmax,
McNemar and distillation read logits; the row says so). Keras's `Flatten` feeds the first dense
layer the spatial size the model was built for (7x7x512 at 224 px, as torchvision; 1x1x512 at 32
px): that head input is kept (ModelSpec.flatten_side), never adaptive-pooled to 7x7, which would
change the function. The `Rescaling` and `Normalization` layers before the first convolution
become the input normalization they compute (folding them into the first convolution instead
would not be exact: its zero padding would then pad with the mean pixel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compress.errors import CompressError, printable
from compress.models.keras_read import KerasFile, read, saved_model_folder
from compress.models.vgg import ModelSpec, build

ALLOWED = {"InputLayer", "Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dropout", "Rescaling", "Normalization"}
MIN_SIDE = 32  # VGG16 halves the resolution 5 times (data.datasets.MIN_IMAGE_SIZE; models cannot import data)


@dataclass
class Converted:
    model: nn.Module
    spec: ModelSpec
    input_size: int
    normalization: str  # what the model expects: "raw" (RGB 0-255, the seeds' input), "unit", "half", or the
    # affine(...) its own Rescaling/Normalization layers compute (Affine.mode)
    notes: list[str] = field(default_factory=list)  # what a reader of the row must know


def _refuse(kf: KerasFile, why: str) -> CompressError:
    return CompressError(f"{kf.path} ({kf.kind}): {why}")


def _check_layers(kf: KerasFile) -> tuple[str, str | None]:
    """(input normalization, the last Dense layer's activation) from the config; custom code refused, unread."""
    affine = Affine()
    last, convs_seen, norms = None, False, 0
    for name, cls, cfg in kf.layers:
        if cls == "Lambda":
            raise _refuse(kf, f"its layer {printable(name)} is a Lambda layer: its Python code is not run here; save "
                              "the model without it (and apply that step to the images instead)")
        if cls not in ALLOWED:
            raise _refuse(kf, f"its layer {printable(name)} is a {printable(cls)}, not a layer of VGG16 (Conv2D, "
                              "MaxPooling2D, Flatten, Dense, Dropout) or its input's Rescaling or Normalization")
        if cls in ("Rescaling", "Normalization") and convs_seen:
            raise _refuse(kf, f"its {cls} layer {printable(name)} comes after a convolution: only the input's own "
                              "preprocessing (before the first Conv2D) can be folded into the input normalization")
        if cls == "Rescaling":
            try:
                scale, offset = _floats(cfg.get("scale", 1.0)), _floats(cfg.get("offset", 0.0))
            except CompressError as exc:
                raise _refuse(kf, f"its Rescaling {printable(name)}: {exc}") from None
            if (scale == 0).any():
                raise _refuse(kf, f"its Rescaling {printable(name)} has scale {','.join(map(str, scale))}: a zero scale "
                                  "makes every image the same input")
            affine = affine.rescaled(scale, offset)
        if cls == "Normalization":
            affine = affine.normalized(*_statistics(kf, name, cfg, norms))
            norms += 1
        convs_seen = convs_seen or cls == "Conv2D"
        if cls == "Conv2D" and (tuple(cfg.get("kernel_size", (3, 3))) != (3, 3) or cfg.get("padding") != "same"
                                or tuple(cfg.get("strides", (1, 1))) != (1, 1) or cfg.get("activation") != "relu"
                                or cfg.get("data_format", "channels_last") != "channels_last"):
            raise _refuse(kf, f"its Conv2D {printable(name)} is not VGG16's 3x3, padding same, stride 1, ReLU, "
                              "channels_last")
        if cls == "MaxPooling2D" and tuple(cfg.get("pool_size", (2, 2))) != (2, 2):
            raise _refuse(kf, f"its MaxPooling2D {printable(name)} is not 2x2")
        if cls == "Dense":
            last = str(cfg.get("activation"))
    return affine.mode(), last


@dataclass(frozen=True)
class Affine:
    """What the layers before the first convolution compute on RGB 0-255 pixels: scale * x + offset per channel."""

    scale: tuple[float, ...] = (1.0, 1.0, 1.0)
    offset: tuple[float, ...] = (0.0, 0.0, 0.0)

    def rescaled(self, scale: np.ndarray, offset: np.ndarray) -> Affine:  # Rescaling: x * scale + offset
        return Affine(tuple(np.asarray(self.scale) * scale), tuple(np.asarray(self.offset) * scale + offset))

    def normalized(self, mean: np.ndarray, std: np.ndarray) -> Affine:  # Normalization: (x - mean) / std
        return Affine(tuple(np.asarray(self.scale) / std), tuple((np.asarray(self.offset) - mean) / std))

    def mode(self) -> str:
        """A named normalization where the layers compute one (raw, unit, half), else the folded affine."""
        for name, (scale, offset) in NAMED.items():
            if np.allclose(self.scale, scale, rtol=1e-6, atol=0) and np.allclose(self.offset, offset, atol=1e-6):
                return name
        def fmt(v: tuple[float, ...]) -> str:
            return "[" + ",".join(f"{float(x):.9g}" for x in v) + "]"
        return f"affine(scale={fmt(self.scale)},offset={fmt(self.offset)})"  # data.normalization.Normalizer reads it


NAMED = {"raw": (1.0, 0.0), "unit": (1 / 255, 0.0), "half": (2 / 255, -1.0)}  # Normalizer's modes, on 0-255


def _floats(v: Any) -> np.ndarray:
    """A scale, offset, mean or variance as three per-channel values (a scalar applies to every channel)."""
    try:
        a = np.asarray(v, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise CompressError(f"a preprocessing value {printable(str(v))[:60]} is not a number") from None
    if a.size not in (1, 3):
        raise CompressError(f"a preprocessing value of {a.size} numbers: expected one, or one per RGB channel")
    if not np.isfinite(a).all():
        raise CompressError(f"a preprocessing value is not finite ({', '.join(map(str, a))})")
    return np.broadcast_to(a, (3,)).copy()


def _statistics(kf: KerasFile, name: str, cfg: dict[str, Any], k: int) -> tuple[np.ndarray, np.ndarray]:
    """A Normalization layer's mean and standard deviation: from its config (mean=, variance= given) or its
    adapted weights (mean, variance, count); Keras divides by max(sqrt(variance), 1e-7)."""
    if cfg.get("invert"):
        raise _refuse(kf, f"its Normalization {printable(name)} has invert=True: it undoes a normalization on the "
                          "input; save the model without it and pass --normalization for the input it expects")
    axis = cfg.get("axis", -1)
    if axis not in (-1, [-1], (-1,), 3, [3], None):
        raise _refuse(kf, f"its Normalization {printable(name)} normalizes over axis {axis}, not the channels (-1)")
    if cfg.get("mean") is not None and cfg.get("variance") is not None:
        mean, variance = cfg["mean"], cfg["variance"]
    else:
        arrays = kf.weights.get(name) or kf.weights.get("normalization" if k == 0 else f"normalization_{k}") or []
        if len(arrays) < 2:
            raise _refuse(kf, f"its Normalization {printable(name)} holds no mean and variance: adapt it (or pass "
                              "mean= and variance=) before saving")
        mean, variance = arrays[0], arrays[1]
    try:
        mean, variance = _floats(mean), _floats(variance)
    except CompressError as exc:
        raise _refuse(kf, f"its Normalization {printable(name)}: {exc}") from None
    if (variance < 0).any():
        raise _refuse(kf, f"its Normalization {printable(name)} has a negative variance "
                          f"({', '.join(f'{v:g}' for v in variance)}): no data gives one; adapt it again")
    return mean, np.maximum(np.sqrt(variance), 1e-7)


def _size(kf: KerasFile, image_size: int | None, side: int, notes: list[str]) -> int:
    if kf.input_shape is not None:
        h = kf.input_shape[0]
        if image_size is not None and image_size != h:
            raise _refuse(kf, f"it was built for {h} px images, but --image-size is {image_size}: pass "
                              f"--image-size {h}")
        size = h
    else:
        size = image_size or 224
        notes.append(f"a weights-only file states no input size: {size} px taken from --image-size")
    if size // 32 != side:
        raise _refuse(kf, f"its first Dense layer reads {side}x{side}x512 values, which a {size} px input does not "
                          f"give ({size // 32}x{size // 32}): pass --image-size {32 * side}")
    return size


def convert(kf: KerasFile, image_size: int | None) -> Converted:
    """The model, its spec and its input, or one line naming what was found and what VGG16 needs."""
    notes: list[str] = []
    if kf.input_shape is not None:
        h, w, c = kf.input_shape
        if h != w or c != 3 or h < MIN_SIDE:
            raise _refuse(kf, f"its input is {h}x{w}x{c}: the suite measures square RGB images of at least "
                              f"{MIN_SIDE} px")
    normalization, last = _check_layers(kf) if kf.layers else ("raw", None)
    _check_arrays(kf)
    named = list(kf.weights.items())  # in layer order (see keras_read)
    convs = [a for _, a in named if len(a) == 2 and a[0].ndim == 4]
    denses = [a for _, a in named if len(a) == 2 and a[0].ndim == 2]
    if len(convs) != 13 or not denses:
        raise _refuse(kf, f"found {len(convs)} Conv2D and {len(denses)} Dense layers with weights; VGG16 has 13 "
                          "convolutions and a dense head")
    widths = tuple(int(k.shape[3]) for k, _ in convs)
    if [int(k.shape[2]) for k, _ in convs] != [3, *widths[:-1]]:
        raise _refuse(kf, "its convolutions do not chain from 3 input channels: not a VGG16")
    side = math.isqrt(int(denses[0][0].shape[0]) // widths[-1])
    if side * side * widths[-1] != denses[0][0].shape[0]:
        raise _refuse(kf, f"its first Dense layer reads {denses[0][0].shape[0]} values, not a square map of "
                          f"{widths[-1]} channels")
    size = _size(kf, image_size, side, notes)
    if last == "sigmoid":
        raise _refuse(kf, "its last Dense layer is a sigmoid: the suite compares classes by argmax of the logits of "
                          "a softmax (or linear) layer")
    notes.append("the last layer's softmax was dropped: the model returns logits" if last in ("softmax", None)
                 else "the last Dense layer is linear: its outputs are the logits")
    notes.append("photos are resized as --resize says (by default Pillow's antialiased bilinear); the Keras "
                 "pipelines resize without antialiasing (image_dataset_from_directory: --resize bilinear) or "
                 "nearest-neighbour (flow_from_directory, load_img: --resize nearest)")
    _check_shapes(kf, [n for n, a in named if len(a) == 2 and a[0].ndim in (2, 4)], convs, denses, side)
    spec = ModelSpec(arch="vgg16", num_classes=int(denses[-1][0].shape[1]), conv_widths=widths, head="mlp",
                     hidden=tuple(int(k.shape[1]) for k, _ in denses[:-1]), flatten_side=None if side == 7 else side)
    model = build(spec).eval()
    _fill(model, convs, denses, side)
    return Converted(model, spec, size, normalization, notes)


def _check_arrays(kf: KerasFile) -> None:
    """Every weight a finite float: a NaN in a Keras file is refused as it is in a .pth (it would score as chance,
    and under ONNX Runtime read as a failed export)."""
    for name, arrays in kf.weights.items():
        for a in arrays:
            if not np.issubdtype(a.dtype, np.floating) and not np.issubdtype(a.dtype, np.integer):
                raise _refuse(kf, f"its layer {printable(name)} holds an array of {a.dtype}, not numbers")
            if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
                raise _refuse(kf, f"its layer {printable(name)} holds non-finite weights (NaN or infinity): the "
                                  "training that wrote it diverged; use an earlier checkpoint")


def _check_shapes(kf: KerasFile, names: list[str], convs: list[list[np.ndarray]], denses: list[list[np.ndarray]],
                  side: int) -> None:
    """Each array the shape VGG16's layer needs, checked before anything is copied: one line naming the layer and
    both shapes (a bias of the wrong length would otherwise surface as PyTorch's size mismatch)."""
    expected: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    in_ch = 3
    for kernel, _ in convs:
        out = int(kernel.shape[-1])
        expected.append(((3, 3, in_ch, out), (out,)))
        in_ch = out
    fan_in = side * side * in_ch
    for kernel, _ in denses:
        out = int(kernel.shape[-1])
        expected.append(((fan_in, out), (out,)))
        fan_in = out
    for name, (kernel, bias), (want_k, want_b) in zip(names, [*convs, *denses], expected):
        for what, got, want in (("kernel", kernel.shape, want_k), ("bias", bias.shape, want_b)):
            if tuple(got) != want:
                raise _refuse(kf, f"its layer {printable(name)} has a {what} of shape {tuple(got)}, but VGG16's layer "
                                  f"there needs {want} (the layers before it give {want_k[-2]} inputs)")


def _fill(model: nn.Module, convs: list[list[np.ndarray]], denses: list[list[np.ndarray]], side: int) -> None:
    torch_convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    torch_linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for m, (kernel, bias) in zip(torch_convs, convs):
            m.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))))  # HWIO -> OIHW
            m.bias.copy_(torch.from_numpy(bias))
        for i, (m, (kernel, bias)) in enumerate(zip(torch_linears, denses)):
            if i == 0:  # Keras flattens (H, W, C), PyTorch (C, H, W)
                c = kernel.shape[0] // (side * side)
                kernel = kernel.reshape(side, side, c, -1).transpose(2, 0, 1, 3).reshape(c * side * side, -1)
            m.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel.T)))
            m.bias.copy_(torch.from_numpy(bias))


def load(path: Path, image_size: int | None) -> tuple[Converted, KerasFile]:
    if saved_model_folder(path):
        raise CompressError(f"{path} is a TensorFlow SavedModel folder: load it in TensorFlow and save it as one file "
                            "with model.save('model.keras'), then pass that file")
    kf = read(path)
    return convert(kf, image_size), kf


def expected(path: Path) -> dict[str, Any]:
    """What the file's model expects as input, from its config alone (the session sets its data up first)."""
    kf = read(path, weights=False)
    normalization, _ = _check_layers(kf) if kf.layers else ("raw", None)
    return {"normalization": normalization, "input_size": kf.input_shape[0] if kf.input_shape else None}
