"""Pixels as the harness scored them, with numpy and Pillow alone (no PyTorch): decode, resize, normalize.

The harness decodes photos with `open_rgb` from here (data/image_folders.py), so a photo decodes the same in both;
the resizes and normalizations are numpy twins of the torchvision steps the harness uses (data/datasets.py), each
tested against them. This module ships inside every bundle, so it imports nothing of compress.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")
ARRAY_EXT = ".npy"  # an image already at the model's size, RGB in [0, 1], C,H,W (`export --test-images` of digits)
MAX_PIXELS = 400_000_000  # Pillow's bomb guard, raised: a 100-megapixel photo is a photo, not an attack
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_BGR_MEANS = (103.939, 116.779, 123.68)  # keras.applications.imagenet_utils, mode "caffe"
AFFINE = "affine"  # affine(scale=[r,g,b],offset=[r,g,b]) on RGB 0-255: a Keras model's preprocessing layers, folded
RESIZES = ("antialias", "bilinear", "nearest")


class PreprocessError(ValueError):
    """An image or a setting this module cannot turn into model input (named in one line)."""


def open_rgb(path: str | Path, size: int | None = None) -> Any:
    """Any mode Pillow reads (L, LA, P, RGBA, CMYK, I;16...) as RGB; big JPEGs decoded at reduced scale (`size`:
    Pillow's DCT draft to twice the target). No EXIF rotation: the pixels are stored as the camera wrote them."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    img = Image.open(path)
    if size and img.format == "JPEG":
        img.draft("RGB", (size * 2, size * 2))  # DCT scaling: a 6000px photo decodes at a fraction of the cost
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):  # 16-bit / float scans: stretch to 8 bits
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(arr.astype(np.uint8), "L")
    return img.convert("RGB")


def to_unit(img: Any) -> np.ndarray:
    """An RGB Pillow image as float32 C,H,W in [0, 1] (torchvision's ToTensor: uint8 to float, then / 255)."""
    arr = np.asarray(img, dtype=np.uint8).astype(np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1)) / np.float32(255.0)


def bilinear(x: np.ndarray, size: int) -> np.ndarray:
    """torch's `interpolate(mode="bilinear", align_corners=False, antialias=False)` of C,H,W float32: half-pixel
    centres, no antialiasing (what tf.image.resize and Keras's image_dataset_from_directory do)."""
    _, h, w = x.shape

    def taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        scale = np.float32(n_in / n_out)
        src = np.maximum((np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5),
                         np.float32(0.0))
        i0 = np.minimum(src.astype(np.int64), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, (src - i0.astype(np.float32)).astype(np.float32)

    h0, h1, lh = taps(h, size)
    w0, w1, lw = taps(w, size)
    lh, lw = lh[:, None], lw[None, :]
    one = np.float32(1.0)
    top = x[:, h0][:, :, w0] * (one - lw) + x[:, h0][:, :, w1] * lw
    bottom = x[:, h1][:, :, w0] * (one - lw) + x[:, h1][:, :, w1] * lw
    return ((one - lh) * top + lh * bottom).astype(np.float32)


def resized(img: Any, size: int, method: str) -> np.ndarray:
    """The decoded photo at size x size as float32 C,H,W in [0, 1], resized as the row's `--resize` did."""
    from PIL import Image

    if method == "antialias":  # torchvision's Resize on a Pillow image is Pillow's (antialiased) bilinear
        return to_unit(img if img.size == (size, size) else img.resize((size, size), Image.BILINEAR))
    if method == "nearest":
        return to_unit(img if img.size == (size, size) else img.resize((size, size), Image.NEAREST))
    if method == "bilinear":
        x = to_unit(img)
        return x if x.shape[1:] == (size, size) else bilinear(x, size)
    raise PreprocessError(f"unknown resize {method!r}: expected one of {', '.join(RESIZES)}")


def parse_affine(mode: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(scale, offset) per R, G, B channel of an `affine(scale=[r,g,b],offset=[r,g,b])` normalization."""
    m = re.fullmatch(r"affine\(scale=\[([^\]]*)\],offset=\[([^\]]*)\]\)", mode)
    try:
        scale, offset = (tuple(float(v) for v in part.split(",")) for part in m.groups())  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        raise PreprocessError(f"normalization {mode!r} is not affine(scale=[r,g,b],offset=[r,g,b])") from None
    if len(scale) != 3 or len(offset) != 3:
        raise PreprocessError(f"normalization {mode!r} needs three scales and three offsets (R, G, B)")
    if not all(map(math.isfinite, [*scale, *offset])) or 0.0 in scale:
        raise PreprocessError(f"normalization {mode!r} needs finite numbers and no zero scale")
    return scale, offset


def normalize(x: np.ndarray, mode: str) -> np.ndarray:
    """Images in [0, 1] (C,H,W or N,C,H,W, float32) as the model expects them (data/normalization.py's twin)."""
    def chan(values: tuple[float, ...]) -> np.ndarray:
        return np.asarray(values, dtype=np.float32).reshape(3, 1, 1)

    if mode == "imagenet":
        return (x - chan(IMAGENET_MEAN)) / chan(IMAGENET_STD)
    if mode == "half":
        return (x - np.float32(0.5)) / np.float32(0.5)
    if mode == "unit":
        return x
    if mode == "raw":
        return x * np.float32(255.0)
    if mode == "caffe":
        return np.flip(x, axis=-3) * np.float32(255.0) - chan(CAFFE_BGR_MEANS)
    if mode.startswith(AFFINE):
        scale, offset = parse_affine(mode)
        return x * np.float32(255.0) * chan(scale) + chan(offset)
    raise PreprocessError(f"unknown normalization {mode!r}")


def describe(mode: str) -> dict[str, Any]:
    """A normalization in explicit numbers, for a reader of bundle.json who does not run this code: the model's
    input = (pixel_0_255 / 255 * scale_unit + offset) per channel, after `channel_order`."""
    if mode == "imagenet":
        return {"channel_order": "RGB", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                "formula": "(x / 255 - mean) / std"}
    if mode == "half":
        return {"channel_order": "RGB", "mean": [0.5] * 3, "std": [0.5] * 3, "formula": "(x / 255 - mean) / std"}
    if mode == "unit":
        return {"channel_order": "RGB", "formula": "x / 255"}
    if mode == "raw":
        return {"channel_order": "RGB", "formula": "x (0-255)"}
    if mode == "caffe":
        return {"channel_order": "BGR", "mean": list(CAFFE_BGR_MEANS), "formula": "x (BGR, 0-255) - mean"}
    scale, offset = parse_affine(mode)
    return {"channel_order": "RGB", "scale": list(scale), "offset": list(offset), "formula": "x * scale + offset"}


def load(path: str | Path, size: int, method: str, mode: str) -> np.ndarray:
    """One file as model input (float32 3,size,size): a photo decoded, resized and normalized as the harness did,
    or a `.npy` image already at the model's size in [0, 1] (normalized only)."""
    path = Path(path)
    if path.suffix.lower() == ARRAY_EXT:
        x = np.load(path, allow_pickle=False)
        if x.shape != (3, size, size) or x.dtype != np.float32:
            raise PreprocessError(f"{path}: an array image must be float32 (3, {size}, {size}) in [0, 1], found "
                                  f"{x.dtype} {tuple(x.shape)}")
        return np.ascontiguousarray(normalize(x, mode), dtype=np.float32)
    draft = size if method == "antialias" else None  # Keras's pipelines resize the full-size decode
    return np.ascontiguousarray(normalize(resized(open_rgb(path, draft), size, method), mode), dtype=np.float32)
