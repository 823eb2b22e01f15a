"""`compress verify DIR --data FOLDER`: the bundle's figures re-checked on the machine it was deployed to.

Top-1 on a labelled folder beside the recorded top-1 (image by image where the folder holds the row's own test
images, which bundle.json lists by sha256; otherwise with a Wilson interval), latency at batch 1 and 32 here beside
the recorded medians, and the instruction sets the recorded figures had that this CPU lacks. Torch-free.
"""

from __future__ import annotations

import math
import statistics
import time
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import machine
from .bundle import Bundle, sha256
from .runner import Predictor, UsageError, image_files

TIMED_BATCHES = (1, 32)


@dataclass
class Verdict:
    """What verify found; `mismatches` non-empty means the same images gave another answer here."""

    images: int
    correct: int
    unreadable: list[str]
    top1: float
    interval: tuple[float, float]
    recorded_top1: float | None
    recorded_images: int | None
    same_images: int  # images of the row's own test split found in the folder (by sha256)
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    latency: dict[int, dict[str, float | None]] = field(default_factory=dict)
    missing_instructions: list[str] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sound at 0 and n, unlike the normal approximation)."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def labelled(folder: Path, classes: list[str]) -> list[tuple[Path, int]]:
    """(file, class index) of a folder with one sub-folder per class, named as the bundle's classes."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"--data {folder} is not a folder: pass a folder with one sub-folder of images per class")
    subs = {unicodedata.normalize("NFC", p.name): p for p in folder.iterdir() if p.is_dir()
            and not p.name.startswith(".")}
    unknown = sorted(set(subs) - set(classes))
    if unknown or not subs:
        raise UsageError(f"--data {folder}: sub-folder(s) {', '.join(unknown) or '(none)'} are not classes of this "
                         f"bundle ({', '.join(classes[:8])}{' ...' if len(classes) > 8 else ''})")
    return [(p, classes.index(name)) for name in sorted(subs) for p in image_files([subs[name]])]


def time_batches(pred: Predictor, batches: tuple[int, ...] = TIMED_BATCHES, budget_s: float = 2.0) -> dict[int, float]:
    """Median ms per call at each batch on a fixed random input (as the harness times), after a warm-up."""
    size = int(pred.pre["image_size"])
    out = {}
    for b in batches:
        x = np.random.default_rng(0).standard_normal((b, 3, size, size), dtype=np.float32)
        pred.run(x), pred.run(x)
        calls: list[float] = []
        start = time.perf_counter()
        while len(calls) < 5 or (time.perf_counter() - start < budget_s and len(calls) < 200):
            t = time.perf_counter()
            pred.run(x)
            calls.append((time.perf_counter() - t) * 1e3)
        out[b] = statistics.median(calls)
    return out


def verify(bundle: Bundle, data: Path, runtime: str | None = None, threads: int | None = None,
           timed: bool = True) -> Verdict:
    pred = Predictor(bundle, runtime, threads)
    items = labelled(data, bundle.classes)
    results = pred.predict([p for p, _ in items])
    recorded = {t["sha256"]: t for t in bundle.manifest.get("test_files", [])}
    good = [(r, label, path) for r, (path, label) in zip(results, items) if r.error is None]
    mismatches, same = [], 0
    for r, _, path in good:
        rec = recorded.get(sha256(path)) if recorded else None
        if rec is not None:
            same += 1
            if rec.get("prediction") is not None and rec["prediction"] != r.index:
                mismatches.append({"file": str(path), "recorded": bundle.classes[rec["prediction"]],
                                   "here": r.label})
    correct = sum(r.index == label for r, label, _ in good)
    figures = bundle.manifest.get("figures", {})
    latency: dict[int, dict[str, float | None]] = {}
    if timed:
        recorded_ms = figures.get("latency", {}).get(pred.runtime, {})
        for b, ms in time_batches(pred).items():
            was = (recorded_ms.get(str(b)) or {}).get("median_ms")
            latency[b] = {"here_ms": ms, "recorded_ms": was, "ratio": ms / was if was else None}
    here = machine.describe()
    return Verdict(images=len(good), correct=correct, unreadable=[r.file for r in results if r.error is not None],
                   top1=correct / len(good) if good else 0.0, interval=wilson(correct, len(good)),
                   recorded_top1=figures.get("top1"), recorded_images=figures.get("test_images"), same_images=same,
                   mismatches=mismatches, latency=latency,
                   missing_instructions=machine.missing(bundle.manifest.get("machine", {}).get("instruction_sets", {}),
                                                        here["instruction_sets"]), machine=here)


def lines(v: Verdict, runtime: str) -> list[str]:
    """The verdict in a few sentences a deployer reads."""
    out = [f"top-1 here: {100 * v.top1:.2f}% on {v.images} images [95% {100 * v.interval[0]:.1f}-"
           f"{100 * v.interval[1]:.1f}]" + (f"; recorded {100 * v.recorded_top1:.2f}% on {v.recorded_images} test "
                                            "images" if v.recorded_top1 is not None else "")]
    if v.same_images:
        out.append(f"{v.same_images} of these are the row's own test images: "
                   + (f"{len(v.mismatches)} gave another answer here" if v.mismatches else "every one gave the "
                      "recorded answer"))
    for m in v.mismatches[:10]:
        out.append(f"  {m['file']}: recorded {m['recorded']}, here {m['here']}")
    for b, f in v.latency.items():
        was = f"recorded {f['recorded_ms']:.2f} ms, here/recorded {f['ratio']:.2f}x" if f["recorded_ms"] else \
            "no recorded figure"
        out.append(f"{runtime} b{b}: {f['here_ms']:.2f} ms here ({was})")
    if v.missing_instructions:
        out.append(f"warning: the recorded figures were measured on a CPU with {', '.join(v.missing_instructions)}; "
                   "this one lacks it: int8 speed (and, in ONNX Runtime, int8 results) can differ here")
    if v.unreadable:
        out.append(f"{len(v.unreadable)} image(s) could not be read: {', '.join(v.unreadable[:5])}")
    return out
