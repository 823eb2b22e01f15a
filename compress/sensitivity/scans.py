"""Stored scans: what a sensitivity scan found, kept per baseline beside the workdir's rows.

A scan records the sha256 of the weights it scanned, so a scan of other weights is never used.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from compress.errors import CompressError, printable
from compress.int8.calibration import CALIBRATION_SIZE, check_size
from compress.store.atomic import write_json

AMOUNTS = tuple(round(0.1 * i, 1) for i in range(1, 10))  # 0.1 ... 0.9, as Li et al.'s Figure 2


@dataclass(frozen=True)
class ScanSettings:
    """What a scan is asked: the points a layer may lose (`--tolerance`), the amounts a pruning scan tries,
    the calibration images of an int8 scan, the thread count ONNX Runtime scores with."""

    tolerance: float = field(default=1.0, metadata={
        "parse": "points", "help": "points of validation accuracy a layer may lose and still count as insensitive"})
    amounts: tuple[float, ...] = field(default=AMOUNTS, metadata={
        "help": "amounts to prune each layer by (pruning scan)"})
    calibration_size: int = field(default=CALIBRATION_SIZE, metadata={
        "help": "training images for int8 calibration, as `run quantization` (quantization scan)"})
    threads: int | None = field(default=None, metadata={"cli": False})  # the latency flags' thread count
    # where an int8 scan's model copies go (the workdir's tmp/; None: the system's)
    temp_root: Path | None = field(default=None, metadata={"cli": False})

    def __post_init__(self) -> None:
        if any(not 0 < a < 1 for a in self.amounts):
            raise CompressError(f"--amounts must be fractions in (0, 1), got {','.join(map(str, self.amounts))}")
        check_size(self.calibration_size)


@dataclass(frozen=True)
class Curve:
    layer: str  # module name, e.g. "features.0"
    channels: int
    accuracy: tuple[float, ...]  # validation accuracy at each amount, pruned alone, no fine-tuning

    def drop(self, base: float) -> tuple[float, ...]:
        """Points lost at each amount (positive = worse)."""
        return tuple(100 * (base - a) for a in self.accuracy)


@dataclass(frozen=True)
class PruningScan:
    baseline: str  # sha256 of the baseline weights it was run on
    val_images: int
    val_accuracy: float
    amounts: tuple[float, ...]
    curves: tuple[Curve, ...]
    seconds: float
    command: str = ""
    kind: str = "pruning"
    tolerance: float = 1.0  # points: the table's "largest amount within"

    def tolerated(self, tolerance: float) -> dict[str, float]:
        """Each layer's largest amount whose validation accuracy stays within `tolerance` points (0: none)."""
        out = {}
        for c in self.curves:
            ok = [a for a, d in zip(self.amounts, c.drop(self.val_accuracy)) if d <= tolerance]
            out[c.layer] = max(ok, default=0.0)
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PruningScan":
        curves = tuple(Curve(c["layer"], c["channels"], tuple(c["accuracy"])) for c in d["curves"])
        return cls(d["baseline"], d["val_images"], d["val_accuracy"], tuple(d["amounts"]), curves, d["seconds"],
                   d.get("command", ""), tolerance=d.get("tolerance", 1.0))


def scan_path(directory: Path, baseline_key: str, kind: str) -> Path:
    return Path(directory) / f"{kind}-{baseline_key}.json"


def stored(directory: Path) -> list[PruningScan | QuantizationScan]:
    """Every readable scan in `directory`, pruning first (for the report)."""
    scans = [s for p in sorted(Path(directory).glob("*.json")) if (s := load_any(p)) is not None]
    return sorted(scans, key=lambda s: s.kind != "pruning")


def save(path: Path, scan: Any) -> None:
    write_json(path, scan.to_dict())


def _load(path: Path, digest: str, kind: str) -> Any:
    """A stored scan of the baseline whose weights hash to `digest`; refused when damaged or of other weights."""
    again = f"run `python -m compress sensitivity {kind}` again"
    try:
        d = json.loads(path.read_text())
        scan = PruningScan.from_dict(d) if kind == "pruning" else QuantizationScan.from_dict(d)
    except (ValueError, KeyError, TypeError) as exc:
        raise CompressError(f"the {kind} sensitivity scan {path} is damaged ({type(exc).__name__}: {exc}): "
                            f"{again}") from None
    if scan.baseline != digest:
        raise CompressError(f"the {kind} sensitivity scan {path} was made on other baseline weights (sha256 "
                            f"{scan.baseline[:12]}, now {digest[:12]}): {again}")
    return scan


def load_pruning(path: Path, digest: str) -> PruningScan:
    """The stored pruning scan of the baseline whose weights hash to `digest`."""
    if not path.exists():
        raise CompressError(f"no pruning sensitivity scan for this baseline at {path}: run `python -m compress "
                            "sensitivity pruning` first (same data flags)")
    return _load(path, digest, "pruning")


def load_quantization(path: Path, digest: str) -> QuantizationScan | None:
    """The stored int8 scan of the baseline whose weights hash to `digest`; None when there is none; refused when
    it is damaged or of other weights (as --per-layer refuses a pruning scan)."""
    return _load(path, digest, "quantization") if path.exists() else None


MAX_PER_LAYER_BYTES = 1_000_000  # a map of a few dozen layers is a few hundred bytes


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"the layer {key!r} is named twice (the JSON would silently keep the last amount)")
        seen[key] = value
    return seen


def parse_per_layer_file(path: Path) -> dict[str, float]:
    """A JSON map {layer: amount}, every amount in (0, 1): read as data before any work (the layer names are
    checked against the model later). A FIFO, a device, a huge or deeply nested file, a duplicate key: one line."""
    path = Path(path)
    hint = "(a JSON map like {\"features.0\": 0.5}, or `sensitivity` for the stored scan)"
    if not path.exists():
        raise CompressError(f"--per-layer {path}: no such file {hint}")
    if not path.is_file():
        raise CompressError(f"--per-layer {path} is not a regular file (a folder, FIFO or device) {hint}")
    if path.stat().st_size > MAX_PER_LAYER_BYTES:
        raise CompressError(f"--per-layer {path} is {path.stat().st_size / 1e6:.1f} MB: a per-layer map is a few "
                            f"hundred bytes {hint}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_unique_keys)
    except RecursionError:
        raise CompressError(f"--per-layer {path} is nested too deeply to be a map of layer -> amount {hint}") from None
    except (OSError, ValueError) as exc:
        raise CompressError(f"--per-layer {path} is not a JSON map of layer -> amount ({exc})") from None
    if not isinstance(raw, dict) or not raw:
        raise CompressError(f"--per-layer {path} must hold a JSON object {{layer: amount}}, got {type(raw).__name__}")
    bad = {k: v for k, v in raw.items() if not (isinstance(v, (int, float)) and not isinstance(v, bool)
                                                 and math.isfinite(v) and 0 < v < 1)}
    if bad:
        k, v = next(iter(bad.items()))
        raise CompressError(f"--per-layer {path}: the amount of {printable(k)} is {printable(repr(v))[:40]}; "
                            "amounts must be numbers in (0, 1)")
    return {k: float(v) for k, v in raw.items()}


def read_per_layer_file(path: Path, layers: list[str]) -> dict[str, float]:
    """parse_per_layer_file, and every name a convolution of the model: {layer: amount} for every layer."""
    raw = parse_per_layer_file(path)
    unknown = [k for k in raw if k not in layers]
    if unknown:
        raise CompressError(f"--per-layer {path} names layer(s) the model does not have: "
                            f"{printable(', '.join(unknown[:5]))[:200]}; "
                            f"its convolutions are {', '.join(layers)}")
    return {k: float(raw.get(k, 0.0)) for k in layers}


@dataclass(frozen=True)
class LayerError:
    layer: str  # ONNX node name
    op: str
    sqnr_db: float  # SQNR of this layer's output, int8 model vs fp32 model (errors of earlier layers included)
    alone_accuracy: float | None  # validation accuracy when only this layer is int8


@dataclass(frozen=True)
class QuantizationScan:
    baseline: str
    val_images: int
    val_accuracy: float  # fp32, by ONNX Runtime
    int8_accuracy: float  # every layer int8 (the default keep-fp32 set is not applied here)
    layers: tuple[LayerError, ...]
    seconds: float
    command: str = ""
    kind: str = "quantization"
    tolerance: float = 1.0
    keep_fp32: tuple[str, ...] = field(default_factory=tuple)  # the layers worth keeping in fp32

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def ranked(self) -> list[str]:
        """Most sensitive first: lowest validation accuracy with the layer alone in int8, then lowest SQNR (the
        order int8/budget.py puts layers back to fp32 in)."""
        def key(x: LayerError) -> tuple[float, float]:
            alone = x.alone_accuracy if x.alone_accuracy is not None else 1.0
            sqnr = x.sqnr_db if x.sqnr_db == x.sqnr_db else float("inf")  # NaN: no figure, ranked last among ties
            return alone, sqnr
        return [x.layer for x in sorted(self.layers, key=key)]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "QuantizationScan":
        layers = tuple(LayerError(**x) for x in d["layers"])
        return cls(d["baseline"], d["val_images"], d["val_accuracy"], d["int8_accuracy"], layers, d["seconds"],
                   d.get("command", ""), tolerance=d.get("tolerance", 1.0), keep_fp32=tuple(d.get("keep_fp32", ())))


def load_any(path: Path) -> PruningScan | QuantizationScan | None:
    """A stored scan for the report, or None when it cannot be read (the report says nothing of it then)."""
    try:
        d = json.loads(Path(path).read_text())
        return PruningScan.from_dict(d) if d.get("kind") == "pruning" else QuantizationScan.from_dict(d)
    except (OSError, ValueError, KeyError, TypeError):
        return None
