"""The result row: one measured model, frozen; every renderer reads the same rows.

Markdown, CSV and JSON are renderings of these rows. Rows written by older versions are read as
the current schema (`ResultRow.from_dict`).
"""

from __future__ import annotations

import hashlib
import json
import math
import types
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from datetime import datetime, timezone
from typing import Any, Union, get_args, get_origin, get_type_hints

import numpy as np


@dataclass(frozen=True)
class ResultRow:
    """One measured model. Theory (params, MACs) and measurement (size, latency) side by side."""

    row_id: str
    created: str
    dataset: str
    compressor: str  # "baseline" for the uncompressed model
    config: dict[str, Any]
    config_hash: str
    baseline_row_id: str | None  # the baseline measured in the same invocation, for fair ratios
    model_path: str
    num_classes: int
    image_size: int
    params: int
    nonzero_params: int
    macs: int
    size_bytes: int
    latency: dict[str, dict[int, Latency]]  # runtime key (measuring/runtimes) -> batch size -> statistics
    accuracy: float | None  # top-1 on the stored test split; None when measured without data
    accuracy_before_finetune: float | None
    test_images: int
    finetune_epochs: int
    best_epoch: int | None
    train_seconds: float
    seed: int
    env: dict[str, Any]
    command: str
    latency_notes: dict[str, str] = field(default_factory=dict)  # runtime -> device name, or why it has no figures
    onnx_size_bytes: int | None = None  # the fp32 ONNX export (for an int8 row: the int8 file is size_bytes)
    onnx_parity: float | None = None  # max |ORT - PyTorch| on test images at export
    backend: str = "pytorch fp32"  # what ran for latency and accuracy
    source_row_id: str | None = None  # --from: the stored run this model was made from, re-measured now
    control_row_id: str | None = None  # the same model trained without the teacher (distillation's control)
    conv_macs: int | None = None  # MACs of the convolutional part alone (theory)
    correct: str | None = None  # per test image, in split order: "1" right, "0" wrong (McNemar's test)
    caveats: list[str] = field(default_factory=list)  # what a reader must know to read this row right
    # speed-ups timed interleaved with a reference (runtime -> batch -> Paired), and the machine's load meanwhile
    paired: dict[str, dict[int, Paired]] = field(default_factory=dict)
    load: dict[str, Any] | None = None  # measuring.cpuload.Load as a dict, plus "busy"
    # how the model was trained: {"world_size", "backend" (None: one process), "per_rank_batch" (None: no training)}
    distributed: dict[str, Any] = field(default_factory=dict)
    # peak memory of inference (runtime -> batch -> Memory), each from a process of its own; notes say how or why not
    memory: dict[str, dict[int, Memory]] = field(default_factory=dict)
    memory_notes: dict[str, str] = field(default_factory=dict)
    # int8: the layers left in fp32 (--keep-fp32's, or what --max-drop / NNCF's accuracy control put back), and
    # the budget loop's steps (each step's fp32 layers and validation drop; where the layer order came from)
    fp32_layers: list[str] | None = None
    int8_budget: dict[str, Any] | None = None

    def lat(self, runtime: str, batch: int) -> Latency | None:
        """The statistics of one runtime at one batch size, or None when it was not timed."""
        return self.latency.get(runtime, {}).get(batch)

    def pair(self, runtime: str, batch: int) -> Paired | None:
        return self.paired.get(runtime, {}).get(batch)

    def busy_on(self, runtime: str) -> bool:
        """Timed busy on this runtime: its own timing window (rows before per-runtime windows: the whole row's)."""
        per = (self.load or {}).get("runtimes")
        if isinstance(per, dict) and runtime in per:
            return bool(per[runtime].get("busy"))
        return self.busy if not isinstance(per, dict) else False

    @property
    def busy(self) -> bool:
        """Timed while other work used more than a small share of the machine."""
        return bool(self.load and self.load.get("busy"))

    def note(self, runtime: str) -> str:
        return self.latency_notes.get(runtime, "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ResultRow":
        """Tolerant of rows written by older versions: unknown keys dropped, new ones defaulted."""
        d = _upgrade(d)
        known = {f.name: f for f in fields(cls)}
        kw: dict[str, Any] = {}
        for name in known:
            if name in d or (known[name].default is MISSING and known[name].default_factory is MISSING):
                kw[name] = d.get(name)
        kw["latency"] = {runtime: {int(b): _latency(v) for b, v in per_batch.items() if v is not None}
                         for runtime, per_batch in (kw.get("latency") or {}).items()}
        kw["paired"] = {runtime: {int(b): v if isinstance(v, Paired) else Paired(**v) for b, v in per_batch.items()}
                        for runtime, per_batch in (kw.get("paired") or {}).items()}
        kw["memory"] = {runtime: {int(b): v if isinstance(v, Memory) else Memory(**v) for b, v in per_batch.items()}
                        for runtime, per_batch in (kw.get("memory") or {}).items()}
        row = cls(**kw)
        problem = invalid(row)
        if problem:
            raise ValueError(problem)
        return row


def _conforms(value: Any, hint: Any) -> bool:
    """Whether a value read back from JSON has the type its field declares (recursively)."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_conforms(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is dict:
        return isinstance(value, dict) and all(_conforms(k, args[0]) and _conforms(v, args[1])
                                               for k, v in value.items())
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and all(_conforms(v, args[0]) for v in value)
    if is_dataclass(hint):
        return isinstance(value, hint) and invalid(value) is None
    return isinstance(value, hint) if isinstance(hint, type) else True


def invalid(obj: Any) -> str | None:
    """Why a row (or one of its figures) read back from a store or a row.json cannot be used, or None: a field
    of the wrong type (a `params` that is a string, or missing), a figure that is not a finite number in its
    range (an accuracy of 7.5 or NaN), a per-image record that is not 0s and 1s."""
    hints = get_type_hints(type(obj))
    for f in fields(obj):
        value = getattr(obj, f.name)
        if not _conforms(value, hints[f.name]):
            return f"{f.name} is {type(value).__name__} {str(value)[:40]!r}, not {_name(hints[f.name])}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"{f.name} is {value}, not a finite number"
    if isinstance(obj, ResultRow):
        for name in ("accuracy", "accuracy_before_finetune"):
            value = getattr(obj, name)
            if value is not None and not 0.0 <= value <= 1.0:
                return f"{name} is {value}, not a fraction from 0 to 1"
        for name in ("params", "nonzero_params", "macs", "size_bytes", "test_images", "num_classes"):
            if getattr(obj, name) < 0:
                return f"{name} is negative ({getattr(obj, name)})"
        if obj.correct is not None and obj.correct.strip("01"):
            return "correct (the per-image record) holds characters other than 0 and 1"
    if isinstance(obj, Latency) and not obj.median_ms > 0:
        return f"a median latency of {obj.median_ms} ms"
    return None


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


# Rows before latency was keyed by runtime and batch had one field per (runtime, batch 1 or 32).
_OLD_LATENCY = {"cpu": "torch", "ort": "ort", "gpu": "cuda"}
# The store keys of rows written before each runtime had one name (measuring/runtimes) -> that name.
OLD_RUNTIME_KEYS = {"torch-cpu": "torch", "compile-cpu": "compile", "ort-cpu": "ort", "openvino-cpu": "openvino",
                    "torch-cuda": "cuda"}
_PER_RUNTIME = ("latency", "paired", "memory", "latency_notes", "memory_notes")


def _latency(value: Any) -> Latency:
    return value if isinstance(value, Latency) else \
        Latency(**{k: v for k, v in value.items() if k in {f.name for f in fields(Latency)}})


def _upgrade(d: dict[str, Any]) -> dict[str, Any]:
    """Read a row written by an older version as the current schema."""
    if "latency" not in d:
        d = dict(d)
        latency: dict[str, dict[int, Any]] = {}
        for prefix, runtime in _OLD_LATENCY.items():
            for batch in (1, 32):
                value = d.pop(f"{prefix}_b{batch}", None)
                if value is not None:
                    latency.setdefault(runtime, {})[batch] = value
        d["latency"] = latency
        notes = {_OLD_LATENCY[p]: d.pop(f"{p}_note") for p in ("gpu", "ort") if d.get(f"{p}_note")}
        d.setdefault("latency_notes", notes)
    d = _rename_runtimes(d)
    comp = (d.get("config") or {}).get("compressor")
    if d.get("compressor") == "depthwise" and isinstance(comp, dict) and "distill" in comp:  # renamed to kd
        d = {**d, "config": {**d["config"], "compressor": {("kd" if k == "distill" else k): v
                                                            for k, v in comp.items()}}}
    return d


def _rename_runtimes(d: dict[str, Any]) -> dict[str, Any]:
    """Figures stored under a runtime's old key (`ort-cpu`) read as its one name (`ort`)."""
    def renamed(per: Any) -> Any:
        return {OLD_RUNTIME_KEYS.get(k, k): v for k, v in per.items()} if isinstance(per, dict) else per

    if not any(isinstance(d.get(f), dict) and set(d[f]) & set(OLD_RUNTIME_KEYS) for f in _PER_RUNTIME) and not (
            isinstance(d.get("load"), dict) and set(d["load"].get("runtimes") or {}) & set(OLD_RUNTIME_KEYS)):
        return d
    d = {**d, **{f: renamed(d.get(f)) for f in _PER_RUNTIME if f in d}}
    if isinstance(d.get("load"), dict) and isinstance(d["load"].get("runtimes"), dict):
        d["load"] = {**d["load"], "runtimes": renamed(d["load"]["runtimes"])}
    return d


ROW_COLUMNS = tuple(f.name for f in fields(ResultRow))


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:10]


def new_row_id(compressor: str, config: dict[str, Any]) -> str:
    """Time plus a short hash of the configuration: sortable and unique per run."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    return f"{stamp}-{compressor}-{config_hash(config)[:6]}"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Latency:
    """Statistics of individual timed calls (not of blocks), in milliseconds."""

    batch: int
    median_ms: float
    p90_ms: float
    iqr_ms: float
    calls: int
    warning: str | None = None


@dataclass(frozen=True)
class Memory:
    """Peak memory of inference at one batch: the whole process's high-water mark and the part above the idle
    process with the runtime imported (on a GPU: CUDA's max allocated, both the same), in MiB."""

    batch: int
    peak_mb: float
    model_mb: float


@dataclass(frozen=True)
class Paired:
    """The speed-up of a candidate over its reference on one runtime and batch, from interleaved blocks."""

    reference_row_id: str
    ratio: float  # geometric mean of the per-unit ratios reference/candidate (A B + B A units)
    low: float  # 95% Student-t interval of that geometric mean (computed on the log ratios)
    high: float
    reference_ms: list[float] = field(default_factory=list)  # per-block medians, reference
    candidate_ms: list[float] = field(default_factory=list)  # per-block medians, candidate
    # the reference timed alone right before and right after the pair (block medians); rows before: empty
    reference_alone_ms: list[float] = field(default_factory=list)

    def cell(self) -> str:
        return f"{self.ratio:.2f}x [{self.low:.2f}–{self.high:.2f}]"


def encode(correct: np.ndarray) -> str:
    """Per-image correctness as a compact '0'/'1' string, stored with the row."""
    return "".join("1" if c else "0" for c in np.asarray(correct, dtype=bool))


def decode(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), dtype=np.uint8) == ord("1")
