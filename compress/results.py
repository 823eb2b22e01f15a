"""The result row, the environment it was measured in, and the durable store.

Every renderer (terminal table, markdown report, JSON) reads the same frozen rows. The store
is SQLite: each row is one transaction, so a crash or Ctrl-C mid-run leaves the rows already
written intact, and two runs writing at once both land (SQLite serialises the writers).
"""

from __future__ import annotations

import functools
import importlib.metadata
import hashlib
import json
import platform
import sqlite3
import subprocess
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from compress.atomic import atomic_open, write_json
from compress.errors import CompressError
from compress.measure import Latency, default_threads
from compress.paired import Paired


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
    latency: dict[str, dict[int, Latency]]  # runtime (measure.RUNTIMES) -> batch size -> statistics
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
    load: dict[str, Any] | None = None  # compress.load.Load as a dict, plus "busy"
    # how the model was trained: {"world_size", "backend" (None: one process), "per_rank_batch" (None: no training)}
    distributed: dict[str, Any] = field(default_factory=dict)

    def lat(self, runtime: str, batch: int) -> Latency | None:
        """The statistics of one runtime at one batch size, or None when it was not timed."""
        return self.latency.get(runtime, {}).get(batch)

    def pair(self, runtime: str, batch: int) -> Paired | None:
        return self.paired.get(runtime, {}).get(batch)

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
        return cls(**kw)


# Rows before latency was keyed by runtime and batch had one field per (runtime, batch 1 or 32).
_OLD_LATENCY = {"cpu": "torch-cpu", "ort": "ort-cpu", "gpu": "torch-cuda"}


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
    comp = (d.get("config") or {}).get("compressor")
    if d.get("compressor") == "depthwise" and isinstance(comp, dict) and "distill" in comp:  # renamed to kd
        d = {**d, "config": {**d["config"], "compressor": {("kd" if k == "distill" else k): v
                                                            for k, v in comp.items()}}}
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


# ---------------------------------------------------------------------------------------
# Environment fingerprint
# ---------------------------------------------------------------------------------------

def _cpu_info() -> tuple[str, list[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), []
    model, flags = platform.processor() or platform.machine(), []
    for line in text.splitlines():
        if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
            model = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and not flags:
            flags = line.split(":", 1)[1].split()
    return model, flags


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5, cwd=Path(__file__).resolve().parent).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


@functools.lru_cache(maxsize=1)
def _static_env() -> dict[str, Any]:
    import torch
    import torchvision

    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = None
    cpu, flags = _cpu_info()
    from compress import openvino_cpu

    try:
        nncf = importlib.metadata.version("nncf")
    except importlib.metadata.PackageNotFoundError:  # not installed: the row says so
        nncf = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "onnxruntime": ort,
        "openvino": openvino_cpu.version(),
        "nncf": nncf,
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_vnni": any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8")),
        "cpu_avx512": "avx512f" in flags,
        "cpu_bf16": any(f in flags for f in ("avx512_bf16", "amx_bf16")),
        "cores": default_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "git_commit": _git_commit(),
    }


def environment(threads: int, dtype: str = "float32") -> dict[str, Any]:
    return {**_static_env(), "threads": threads, "dtype": dtype}


# ---------------------------------------------------------------------------------------
# Store
# ---------------------------------------------------------------------------------------

@dataclass
class Store:
    """Append-only SQLite store of result rows."""

    path: Path
    timeout_s: float = 60.0
    _schema: str = field(default="""CREATE TABLE IF NOT EXISTS rows (
        row_id TEXT PRIMARY KEY, dataset TEXT NOT NULL, compressor TEXT NOT NULL,
        created TEXT NOT NULL, payload TEXT NOT NULL)""", repr=False)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            con = sqlite3.connect(self.path, timeout=self.timeout_s)
            con.execute(self._schema)
        except sqlite3.DatabaseError as exc:
            raise CompressError(f"results store {self.path} cannot be opened ({exc}): move it aside; "
                                "every row is also kept as row.json in its run folder") from None
        return con

    @property
    def root(self) -> Path:
        """The workdir the store belongs to: model paths inside it are stored relative to it."""
        return self.path.parent

    def payload(self, row: ResultRow) -> dict[str, Any]:
        """The row as stored: its model path relative to the workdir, so a copied or moved workdir
        still finds its own files (an absolute path would silently load the original's)."""
        d = row.to_dict()
        try:
            d["model_path"] = Path(row.model_path).resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:  # a file outside the workdir (measure --weights elsewhere): kept absolute
            d["model_path"] = str(Path(row.model_path).resolve())
        return d

    def located(self, row: ResultRow) -> ResultRow:
        """The row with its model path resolved against this store's workdir."""
        p = Path(row.model_path)
        return row if p.is_absolute() else replace(row, model_path=str(self.root / p))

    def add(self, row: ResultRow) -> None:
        con = self._connect()
        try:
            with con:  # one transaction: the row is in or it is not
                con.execute("INSERT INTO rows VALUES (?, ?, ?, ?, ?)",
                            (row.row_id, row.dataset, row.compressor, row.created,
                             json.dumps(self.payload(row), default=str)))
        except sqlite3.OperationalError as exc:
            if "full" in str(exc).lower():
                raise CompressError(f"the disk holding {self.path} is full ({_free(self.path)} free): free space "
                                    "there and run again; the rows already stored are intact") from None
            raise
        finally:
            con.close()

    def check(self) -> None:
        """Open an existing store once, so a damaged one is found before any work, not after it."""
        if self.path.exists():
            self._connect().close()

    def rows(self, dataset: str | None = None) -> list[ResultRow]:
        if not self.path.exists():
            return []
        con = self._connect()
        try:
            q = "SELECT row_id, payload FROM rows" + (" WHERE dataset = ?" if dataset else "") + \
                " ORDER BY created, row_id"
            found = _readable(con.execute(q, (dataset,) if dataset else ()).fetchall(), self.path)
            return [self.located(r) for r in found]
        finally:
            con.close()

    def datasets(self) -> list[str]:
        if not self.path.exists():
            return []
        con = self._connect()
        try:
            return [d for (d,) in con.execute("SELECT DISTINCT dataset FROM rows ORDER BY dataset")]
        finally:
            con.close()


def _free(path: Path) -> str:
    import shutil

    try:
        return f"{shutil.disk_usage(Path(path).parent).free / 1e6:.1f} MB"
    except OSError:
        return "unknown space"


def _readable(found: list[tuple[str, str]], path: Path) -> list[ResultRow]:
    """Every stored row that still parses; a damaged one is named and skipped, never a traceback."""
    import sys

    rows, bad = [], []
    for row_id, payload in found:
        try:
            rows.append(ResultRow.from_dict(json.loads(payload)))
        except (ValueError, TypeError, KeyError, AttributeError):
            bad.append(row_id)
    if bad:
        print(f"warning: skipped {len(bad)} damaged row(s) in {path}: {', '.join(bad[:5])}; each run folder keeps "
              "its row.json", file=sys.stderr)
    return rows


def save_run(store: Store, row: ResultRow, preds: np.ndarray | None, run_dir: Path) -> None:
    """row.json and the predictions beside the model, then the store: the store feeds the reports."""
    write_json(run_dir / "row.json", store.payload(row))
    if preds is not None:
        with atomic_open(run_dir / "predictions.npy", "wb") as fh:
            np.save(fh, preds)
    store.add(row)
