"""Stored searches: what `compress search` tried and found, read back for the report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

Objective = Literal["ort-b32", "torch-b32", "size", "macs"]  # a latency objective is <runtime name>-b32
OBJECTIVES: tuple[str, ...] = get_args(Objective)
RENAMED = {"cpu-b32": "torch-b32"}  # before each runtime had one name
LATENCY = {"ort-b32": "ort", "torch-b32": "torch"}  # latency objective -> the runtime it reads
UNIT = {"ort-b32": "ms", "torch-b32": "ms", "cpu-b32": "ms", "size": "bytes", "macs": "MACs"}


@dataclass
class Tried:
    """One proposal and how far it got: skipped by theory, skipped untuned, or trained and measured."""

    number: int
    method: str
    settings: dict[str, Any]
    int8: bool
    stage: str  # "theory" | "untuned" | "trained" | "failed"
    macs: int
    params: int = 0  # what --objective size is priced by in theory (bytes follow parameters, not MACs)
    untuned_val: float | None = None
    val_accuracy: float | None = None
    value: float | None = None  # the objective, measured on the stored row
    row_id: str | None = None
    source_row_id: str | None = None  # the fp32 row an int8 candidate was made from
    note: str = ""

    def feasible(self, base_val: float, max_drop: float) -> bool:
        return self.val_accuracy is not None and 100 * (base_val - self.val_accuracy) <= max_drop + 1e-9


@dataclass
class Outcome:
    config: dict[str, Any]
    baseline_row_id: str
    baseline_val: float
    baseline_value: float | None
    tried: list[Tried] = field(default_factory=list)
    best: Tried | None = None
    best_untuned: bool = False
    seconds: float = 0.0
    command: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pareto(tried: list[Tried]) -> list[Tried]:
    """Measured candidates no other one beats on both the objective (lower) and validation accuracy (higher)."""
    done = sorted((t for t in tried if t.value is not None and t.val_accuracy is not None),
                  key=lambda t: (t.value, -(t.val_accuracy or 0)))
    front, best_acc = [], -1.0
    for t in done:
        if (t.val_accuracy or 0) > best_acc:
            front.append(t)
            best_acc = t.val_accuracy or 0
    return front


def load(path: Path) -> Outcome | None:
    """A stored search for the report (None when it cannot be read)."""
    import json

    try:
        d = json.loads(Path(path).read_text())
        tried = [Tried(**t) for t in d.pop("tried")]
        best = d.pop("best")
        return Outcome(**d, tried=tried, best=Tried(**best) if best else None)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def newest(folder: Path) -> Outcome | None:
    """The newest stored search in `folder` (Workspace.search_dir), or None."""
    found = sorted(Path(folder).glob("search-*.json"))
    return load(found[-1]) if found else None
