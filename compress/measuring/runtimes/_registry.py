"""The runtime registry: one record per runtime (a dict plus a decorator, as the compressors').

A record says everything the rest of the suite needs to know about a runtime: its one name (the
`--runtimes` value, the key its figures are stored under in a row, its column label in tables, and
what docs and bundles call it), a longer title for prose, whether it is timed by default, how it
times a model and, for the runtime a deployed file runs on, how it scores it. The harness loops over
the records in their order. Rows stored under the old keys (`ort-cpu`, ...) are read through `OLD_KEYS`.

Runtime modules are found the first time the registry is read (not when this package is
imported): the runtime modules import the timing module, which reads this registry to check
`--runtimes`, so importing them eagerly here would make an import circle.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from compress.errors import CompressError
from compress.store.rows import OLD_RUNTIME_KEYS as OLD_KEYS

# Each takes the harness's Measurement (measuring/subject.py); not named here, so that the registry, which
# the timing module reads, imports nothing of the harness.
TimeFn = Callable[[Any], None]
ScoreFn = Callable[[Any], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Runtime:
    """One runtime: its identity, written once, and how it times (and scores) a model."""

    key: str  # its one name: the --runtimes value, latency[key][batch] in a row, the column label ("ort")
    name: str  # its title in prose ("ONNX Runtime (CPU)")
    time: TimeFn  # times the measurement's model on every batch (paired with the reference when there is one)
    order: int = 100  # place in tables and in the harness's loop (lower first)
    default: bool = False  # timed unless --runtimes says otherwise
    help: str = ""  # what it is, for --runtimes --help
    reads_onnx: bool = False  # times the parity-checked ONNX export (the harness exports once for all of them)
    always: bool = False  # `time` runs even when not in --runtimes (to record why there is no figure, e.g. no GPU)
    score: ScoreFn | None = None  # predicted and true labels over the test split, from what it runs
    scores: Callable[[Any], bool] | None = None  # whether it is the runtime that scores this artifact
    memory: Callable[[Any], Any] | None = None  # Measurement -> measuring.memory.Job (None: no memory figure)


_REGISTRY: dict[str, Runtime] = {}
_SEARCHED: set[tuple[str, ...]] = set()  # the package paths already searched for runtime modules


def register(key: str, name: str, **declared: Any) -> Callable[[TimeFn], TimeFn]:
    """Register the decorated timing function as runtime `key`; `declared` sets the other Runtime fields."""
    def wrap(fn: TimeFn) -> TimeFn:
        if key in _REGISTRY:
            raise ValueError(f"runtime {key!r} is registered twice")
        _REGISTRY[key] = Runtime(key, name, fn, **declared)
        return fn

    return wrap


def discover() -> None:
    """Import every public module of the runtimes package (each one's @register runs), once per package path."""
    package = importlib.import_module("compress.measuring.runtimes")
    where = tuple(package.__path__)
    if where in _SEARCHED:
        return
    _SEARCHED.add(where)
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")


def in_order() -> list[Runtime]:
    """Every registered runtime, in table order."""
    discover()
    return sorted(_REGISTRY.values(), key=lambda r: (r.order, r.key))


def keys() -> tuple[str, ...]:
    return tuple(r.key for r in in_order())


def get(key: str) -> Runtime:
    discover()
    try:
        return _REGISTRY[OLD_KEYS.get(key, key)]
    except KeyError:
        raise CompressError(f"unknown runtime {key!r}: choose one of {', '.join(keys())}") from None


def defaults() -> tuple[str, ...]:
    """The runtimes timed when --runtimes is not given."""
    return tuple(r.key for r in in_order() if r.default)


def help_text() -> str:
    return ("where each model is timed: " + ", ".join(f"{r.key} ({r.help or r.name})" for r in in_order())
            + "; comma-separated")


def label(key: str) -> str:
    """A runtime's column label: its one name (a key no longer registered reads as itself)."""
    return OLD_KEYS.get(key, key)


def name(key: str) -> str:
    discover()
    return _REGISTRY[key].name if key in _REGISTRY else key
