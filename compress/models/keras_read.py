"""Keras files read as data: HDF5 (Keras 2 and 3's legacy whole-model and weights-only files), `.keras`
archives and Keras 3 `.weights.h5`, with h5py and zipfile alone (no TensorFlow, no Keras).

Nothing in a file is run: a model's config is JSON, read as data, and a `Lambda` layer (whose code
the config carries) is refused, never deserialised. Sizes are checked before anything is read.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from compress.errors import CompressError, printable

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"
MAX_BYTES = 8 * 1024**3  # a VGG16 of 17 classes is 537 MB; past this a file is not a model
MAX_RATIO = 20  # a .keras member unpacking to more than this times its packed size is a zip bomb, not weights
SUFFIXES = (".h5", ".hdf5", ".keras")


@dataclass
class KerasFile:
    """What a Keras file holds: its layers in order (name, class, config) and each layer's arrays."""

    path: Path
    kind: str  # "keras-2/3 HDF5 model", "HDF5 weights", ".keras archive", "Keras 3 weights"
    layers: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # empty: weights only
    weights: dict[str, list[np.ndarray]] = field(default_factory=dict)  # layer name -> arrays, in layer order
    input_shape: tuple[int, ...] | None = None  # (H, W, C) when the file states it


def is_keras(path: Path) -> bool:
    """An HDF5 file or a zip archive by its first bytes (a Keras file, or one we will say is not)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return False
    return head == HDF5_MAGIC or (head[:4] == ZIP_MAGIC and Path(path).suffix.lower() == ".keras")


def saved_model_folder(path: Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "saved_model.pb").exists()


def _natural(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


Keep = Callable[[str], bool]


def _all(name: str) -> bool:
    return True


def small(layers: list[tuple[str, str, dict[str, Any]]]) -> Keep:
    """The layers read when only the config is wanted: a Normalization layer's adapted statistics (its config
    name in HDF5 models; its class's auto name, normalization, normalization_1, ..., in Keras 3 archives)."""
    names = {name for name, cls, _ in layers if cls == "Normalization"}
    return lambda name: name in names or (bool(names) and re.fullmatch(r"normalization(_\d+)?", name) is not None)


def _legacy(group: Any, keep: Keep = _all) -> dict[str, list[np.ndarray]]:
    """Keras 2 layout (also Keras 3's legacy HDF5): `layer_names` in order, each layer's `weight_names`."""
    out = {}
    for name in (_text(n) for n in group.attrs["layer_names"]):
        if not keep(name):
            continue
        g = group[name]
        out[name] = [np.asarray(g[_text(w)]) for w in g.attrs.get("weight_names", [])]
    return out


def _v3(h5: Any, keep: Keep = _all) -> dict[str, list[np.ndarray]]:
    """Keras 3 layout: layers/<name>/vars/<i>, where <name> is the auto name of the layer's class in creation order
    (conv2d, conv2d_1, ..., dense, dense_1: not the config's names), so the names' natural order is the layers'."""
    layers = h5["layers"]
    names = sorted((n for n in layers if keep(n)), key=_natural)
    out = {}
    for name in names:
        found = layers[name].get("vars")
        out[name] = [np.asarray(found[k]) for k in sorted(found, key=int)] if found is not None else []
    return out


def _config_layers(config: dict[str, Any]) -> tuple[list[tuple[str, str, dict[str, Any]]], tuple[int, ...] | None]:
    """(name, class, config) of each layer of a Sequential or Functional config, and the input shape it states."""
    layers = (config.get("config") or {}).get("layers")
    if not isinstance(layers, list):
        raise CompressError("the model's config lists no layers: save the whole model (model.save) or pass its "
                            "weights with --image-size")
    out, shape = [], None
    for layer in layers:
        cls, cfg = str(layer.get("class_name")), layer.get("config") or {}
        stated = cfg.get("batch_shape") or cfg.get("batch_input_shape")
        if shape is None and isinstance(stated, list) and len(stated) == 4:
            shape = tuple(int(v) if v is not None else -1 for v in stated[1:])
        out.append((str(cfg.get("name", cls)), cls, cfg))
    return out, shape


def _open_h5(source: Any) -> Any:
    import h5py

    return h5py.File(source, "r")


def read(path: Path, weights: bool = True) -> KerasFile:
    """Every layer and (unless `weights` is off: the config and a Normalization layer's statistics, no 0.5 GB
    read) every weight of a Keras file, as data; one line for a file that is not one."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise CompressError(f"{path} is {size / 1e9:.1f} GB: larger than any VGG16 (a 17-class one is 0.5 GB)")
    try:
        if path.suffix.lower() == ".keras":
            return _archive(path, weights)
        with _open_h5(path) as h5:
            return _hdf5(path, h5, weights)
    except CompressError:
        raise
    except Exception as exc:  # h5py raises OSError, KeyError, ValueError on damaged or foreign files
        raise CompressError(f"{path} cannot be read as a Keras file ({type(exc).__name__}: "
                            f"{printable(str(exc).splitlines()[0] if str(exc) else 'damaged')}): is it truncated? "
                            "Save it again with model.save('model.keras') or model.save_weights") from None


def _hdf5(path: Path, h5: Any, weights: bool = True) -> KerasFile:
    if "model_config" in h5.attrs and "model_weights" in h5:
        layers, shape = _config_layers(json.loads(_text(h5.attrs["model_config"])))
        return KerasFile(path, "Keras HDF5 model", layers, _legacy(h5["model_weights"], _all if weights
                                                                   else small(layers)), shape)
    if "layer_names" in h5.attrs:
        return KerasFile(path, "Keras HDF5 weights", [], _legacy(h5) if weights else {})
    if "layers" in h5:
        return KerasFile(path, "Keras 3 weights", [], _v3(h5) if weights else {})
    raise CompressError(f"{path} is an HDF5 file but not one Keras wrote (no model_config, layer_names or layers): "
                        "pass a file from model.save('x.h5'), model.save_weights('x.h5') or model.save('x.keras')")


def _archive(path: Path, weights: bool = True) -> KerasFile:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise CompressError(f"{path} is not a .keras archive (a zip of config.json and model.weights.h5): is it "
                            "truncated? Save it again with model.save('model.keras')") from None
    with archive:
        names = set(archive.namelist())
        if not {"config.json", "model.weights.h5"} <= names:
            raise CompressError(f"{path} is a zip without config.json and model.weights.h5: not a .keras archive")
        for info in archive.infolist():
            if info.file_size > MAX_BYTES or info.file_size > MAX_RATIO * max(info.compress_size, 1) + 2**20:
                raise CompressError(f"{path}: its member {printable(info.filename)} would unpack to "
                                    f"{info.file_size / 1e9:.1f} GB: refused")
        layers, shape = _config_layers(json.loads(archive.read("config.json")))
        if not weights and not any(cls == "Normalization" for _, cls, _ in layers):
            return KerasFile(path, ".keras archive", layers, {}, shape)  # the config alone: no 0.5 GB read
        if not weights:  # seek to the statistics inside the member (Keras stores it uncompressed)
            with archive.open("model.weights.h5") as member, _open_h5(member) as h5:
                return KerasFile(path, ".keras archive", layers, _v3(h5, small(layers)), shape)
        with _open_h5(io.BytesIO(archive.read("model.weights.h5"))) as h5:
            return KerasFile(path, ".keras archive", layers, _v3(h5), shape)
