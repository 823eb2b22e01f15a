"""`python bundle/predict.py PATH...` and `compress predict DIR PATH...`: the class of each photo, from the
measured model, with the preprocessing it was measured with. Needs numpy, Pillow and ONNX Runtime (or OpenVINO
for an IR bundle): no PyTorch, nothing of compress beyond this folder, which ships inside every bundle.

Exit codes as the compress CLI's: 0 all predicted, 1 when any image could not be read (the others are still
predicted), 2 for a usage error (a bundle that is missing or was changed, a path that does not exist).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from . import preprocess, sessions
from .bundle import Bundle, BundleError

BATCH = 32


class UsageError(ValueError):
    """Bad arguments: exit 2 with one line."""


@dataclass
class Prediction:
    """One file's answer, or why it has none."""

    file: str
    index: int | None = None
    label: str | None = None
    probability: float | None = None
    topk: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"file": self.file, "error": self.error}
        return {"file": self.file, "label": self.label, "index": self.index, "probability": self.probability,
                "topk": self.topk}


def threads() -> int:
    """All the cores this process may use, as the harness times by default."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def image_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders searched recursively for images (any case of extension; hidden files skipped)."""
    found: list[Path] = []
    wanted = (*preprocess.IMAGE_EXTS, preprocess.ARRAY_EXT)
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            inside = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in wanted
                      and not any(part.startswith(".") for part in p.relative_to(path).parts)]
            found += sorted(inside, key=lambda p: unicodedata.normalize("NFC", str(p)))
        elif path.is_file():
            found.append(path)
        else:
            raise UsageError(f"{path} does not exist: pass image files or folders of images")
    return found


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class Predictor:
    """A checked bundle's model on one runtime, fed as the harness fed it."""

    def __init__(self, bundle: Bundle, runtime: str | None = None, n_threads: int | None = None) -> None:
        self.bundle = bundle
        self.runtime = bundle.runtime(runtime)
        self.pre = bundle.preprocessing
        self.run: Callable[[np.ndarray], np.ndarray] = sessions.predictor(bundle.model_path, self.runtime,
                                                                            n_threads or threads())

    def load(self, path: Path) -> np.ndarray:
        return preprocess.load(path, int(self.pre["image_size"]), self.pre["resize"], self.pre["normalization"])

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities of a float32 N,C,H,W batch of model input."""
        return softmax(self.run(x))

    def predict(self, files: Sequence[Path], batch: int = BATCH, top_k: int = 1) -> list[Prediction]:
        """Each file's class; an unreadable file gets an error and the others are still predicted."""
        out: list[Prediction] = []
        for start in range(0, len(files), batch):
            chunk, inputs, where = files[start:start + batch], [], []
            results = [Prediction(str(p)) for p in chunk]
            for i, path in enumerate(chunk):
                try:
                    inputs.append(self.load(path))
                    where.append(i)
                except Exception as exc:  # Pillow raises many types for a broken file; name it, go on
                    results[i].error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'}"
            if inputs:
                probs = self.probabilities(np.stack(inputs))
                for i, p in zip(where, probs):
                    self._fill(results[i], p, top_k)
            out += results
        return out

    def _fill(self, result: Prediction, p: np.ndarray, top_k: int) -> None:
        classes = self.bundle.classes
        order = np.argsort(-p, kind="stable")[:max(1, top_k)]
        result.index, result.probability = int(order[0]), float(p[order[0]])
        result.label = classes[result.index]
        result.topk = [{"label": classes[int(j)], "probability": float(p[j])} for j in order]


def _table(results: list[Prediction], top_k: int) -> str:
    rows = [("file", "label", "probability", *(("top-k",) if top_k > 1 else ()))]
    for r in results:
        if r.error is not None:
            rows.append((r.file, "ERROR", r.error, *(("",) if top_k > 1 else ())))
        else:
            topk = ", ".join(f"{t['label']} {t['probability']:.3f}" for t in r.topk)
            rows.append((r.file, str(r.label), f"{r.probability:.4f}", *((topk,) if top_k > 1 else ())))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def emit(results: list[Prediction], fmt: str, top_k: int, stream: Any = None) -> None:
    stream = stream or sys.stdout
    if fmt == "json":
        json.dump([r.to_dict() for r in results], stream, indent=2, ensure_ascii=False)
        stream.write("\n")
    elif fmt == "csv":
        w = csv.writer(stream)
        w.writerow(["file", "label", "index", "probability", "error"])
        for r in results:
            w.writerow([r.file, r.label or "", "" if r.index is None else r.index,
                        "" if r.probability is None else f"{r.probability:.6f}", r.error or ""])
    else:
        print(_table(results, top_k), file=stream)


def parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Name the class of each image with the bundle's measured "
                                "model, preprocessed exactly as it was measured.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, or folders searched recursively")
    p.add_argument("--runtime", default=None, choices=[sessions.ORT, sessions.OPENVINO],
                   help="ort or openvino (default: the runtime the row was measured on)")
    p.add_argument("--top-k", type=int, default=1, metavar="K", help="also list the K most likely classes")
    p.add_argument("--batch-size", type=int, default=BATCH, help=f"images per model call (default {BATCH})")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores, as measured)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="a JSON list: file, label, index, probability, topk")
    out.add_argument("--csv", action="store_true", help="CSV: file, label, index, probability, error")
    return p


def main(argv: Sequence[str] | None = None, bundle_dir: Path | None = None, prog: str = "predict.py") -> int:
    """Run as the bundle's predict.py (`bundle_dir` is its folder) or as `compress predict DIR ...`."""
    args = parser(prog).parse_args(argv)
    try:
        if args.top_k < 1 or args.batch_size < 1 or (args.threads is not None and args.threads < 1):
            raise UsageError("--top-k, --batch-size and --threads must be at least 1")
        bundle = Bundle.open(bundle_dir if bundle_dir is not None else Path(__file__).resolve().parent.parent)
        files = image_files(args.paths)
        if not files:
            raise UsageError(f"no images under {', '.join(args.paths)} ({' '.join(preprocess.IMAGE_EXTS)}, "
                             f"{preprocess.ARRAY_EXT})")
        results = Predictor(bundle, args.runtime, args.threads).predict(files, args.batch_size, args.top_k)
    except (UsageError, BundleError, sessions.SessionError, preprocess.PreprocessError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    try:
        emit(results, "json" if args.json else "csv" if args.csv else "table", args.top_k)
    except BrokenPipeError:  # `predict.py photos/ | head`: the reader left; not an error of ours
        sys.stdout = open(os.devnull, "w")
        return 0
    failed = [r for r in results if r.error is not None]
    for r in failed:
        print(f"{prog}: cannot read {r.file}: {r.error}", file=sys.stderr)
    return 1 if failed else 0
