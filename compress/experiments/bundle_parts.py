"""The pieces of a deploy bundle (experiments/export.py puts them together): the model file, the manifest's
record of the row, the runner's files, and the row's test images with the runner's answers on them."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compress import deploy
from compress.data import datasets
from compress.data.datasets import DataBundle, DataConfig
from compress.data.split import Split
from compress.deploy import preprocess, sessions
from compress.deploy.bundle import FORMAT, Bundle, sha256
from compress.deploy.runner import Predictor, softmax, threads
from compress.errors import CompressError
from compress.experiments.bundle_readme import readme
from compress.measuring.environment import environment
from compress.measuring.onnx_export import export_onnx
from compress.models import checkpoints
from compress.store.rows import ResultRow, now_iso
from compress.store.workspace import Workspace

INSTRUCTION_SETS = ("avx2", "avx512", "vnni", "avx_vnni", "bf16", "amx")  # deploy/machine.py's names
ONNX_FILE, IR_FILE = "model.onnx", "model.xml"


def model_kind(row: ResultRow, ws: Workspace) -> str:
    """"onnx" or "ir" (an int8 file shipped as measured) or "torch" (an fp32 model exported here); a row measured
    as a PyTorch module that ONNX would not reproduce exactly (fp16, bf16, dynamic int8) is refused."""
    path = Path(row.model_path)
    if not path.is_file():
        raise CompressError(f"row {row.row_id}'s model file {path} is gone: run that step again, then export it")
    if path.suffix == ".onnx":
        return "onnx"
    if path.suffix == ".xml":
        return "ir"
    if row.backend not in ("pytorch fp32", None):
        rows = [r for r in ws.store.rows(row.dataset) if r.backend == "pytorch fp32" or
                Path(r.model_path).suffix in (".onnx", ".xml")]
        named = ", ".join(f"{r.row_id} ({r.compressor})" for r in rows[-4:]) or "none yet"
        raise CompressError(f"row {row.row_id} was measured as {row.backend} in PyTorch, which an ONNX or OpenVINO "
                            f"file would not reproduce exactly: it is not exported. Rows that export: {named}")
    return "torch"


def base_manifest(row: ResultRow, cfg: DataConfig, classes: list[str]) -> dict[str, Any]:
    """What bundle.json says of the row: identity, preprocessing, classes, figures, machine and versions."""
    env = row.env or {}
    return {
        "format": FORMAT, "row_id": row.row_id, "dataset": row.dataset, "compressor": row.compressor,
        "settings": (row.config or {}).get("compressor"), "backend": row.backend, "command": row.command,
        "preprocessing": {"image_size": row.image_size, "resize": cfg.resize if cfg.data else None,
                          "normalization": cfg.normalization, **preprocess.describe(cfg.normalization),
                          "layout": "NCHW float32", "decode": "Pillow, any mode converted to RGB (16-bit stretched "
                          "to 8), JPEGs decoded at twice the size with Pillow's draft when resize is antialias; no "
                          "EXIF rotation", "source": "photo folder" if cfg.data else f"built-in {cfg.dataset}"},
        "classes": list(classes),
        "figures": {"top1": row.accuracy, "test_images": row.test_images, "params": row.params,
                    "nonzero_params": row.nonzero_params, "macs": row.macs, "size_bytes": row.size_bytes,
                    "onnx_size_bytes": row.onnx_size_bytes, "fp32_layers": row.fp32_layers,
                    "latency": {rt: {str(b): {"median_ms": v.median_ms, "p90_ms": v.p90_ms, "calls": v.calls}
                                     for b, v in per.items()} for rt, per in row.latency.items()},
                    "speedup_over_reference": {rt: {str(b): {"ratio": p.ratio, "low": p.low, "high": p.high,
                                                             "reference_row_id": p.reference_row_id}
                                                    for b, p in per.items()} for rt, per in row.paired.items()},
                    "peak_memory_mb": {rt: {str(b): m.peak_mb for b, m in per.items()}
                                       for rt, per in row.memory.items()}},
        "machine": {"cpu": env.get("cpu"), "cores": env.get("cores"), "threads": env.get("threads"),
                    "instruction_sets": {k: env.get(f"cpu_{k}") for k in INSTRUCTION_SETS}},
        "versions": {k: env.get(k) for k in ("onnxruntime", "openvino", "nncf", "torch", "python", "git_commit")},
        "exported": {"at": now_iso(), "by": environment(1).get("git_commit")},
    }


def _agreement(model: torch.nn.Module, path: Path, runtime: str, x: np.ndarray) -> dict[str, Any]:
    """The exported file's class probabilities beside PyTorch's on the row's test images; any changed top-1 is
    refused with the figures."""
    run = sessions.predictor(path, runtime, threads())
    agree, worst = 0, 0.0
    for start in range(0, len(x), 64):
        xb = x[start:start + 64]
        with torch.inference_mode():
            want = softmax(model(torch.from_numpy(xb)).numpy())
        got = softmax(run(xb))
        agree += int((want.argmax(1) == got.argmax(1)).sum())
        worst = max(worst, float(np.abs(want - got).max()))
    figures = {"against": "pytorch", "images": int(len(x)), "top1_agreement": agree / max(1, len(x)),
               "max_probability_difference": worst}
    if agree != len(x):
        raise CompressError(f"the exported model changes {len(x) - agree} of {len(x)} predictions against PyTorch "
                            f"(largest probability difference {worst:.3g}): the bundle was not written")
    return figures


def _metadata(manifest: dict[str, Any]) -> dict[str, str]:
    return {"compress.row_id": manifest["row_id"], "compress.classes": json.dumps(manifest["classes"]),
            "compress.preprocessing": json.dumps(manifest["preprocessing"])}


def _openvino_ir(onnx_path: Path, xml: Path, manifest: dict[str, Any]) -> None:
    """The ONNX export as an fp32 IR with the preprocessing and labels in its rt_info (save_model would store
    fp16 weights by default)."""
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    pre = manifest["preprocessing"]
    model.set_rt_info(" ".join(map(str, manifest["classes"])), ["model_info", "labels"])
    model.set_rt_info(json.dumps(manifest["classes"]), ["model_info", "labels_json"])
    model.set_rt_info(json.dumps(pre), ["model_info", "compress_preprocessing"])
    for key, value in _metadata(manifest).items():
        model.set_rt_info(value, ["model_info", key])
    ov.save_model(model, str(xml), compress_to_fp16=False)


def measured_first(row: ResultRow, runtimes: list[str]) -> list[str]:
    """The runtimes that can run the file, those the row was timed on first (a bundle runs on its measured one)."""
    return sorted(runtimes, key=lambda rt: rt not in row.latency)


def write_model(row: ResultRow, kind: str, fmt: str | None, stage: Path, x: np.ndarray,
                manifest: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model file in the bundle and what it is; for an fp32 export, its agreement with PyTorch."""
    src = Path(row.model_path)
    if kind in ("onnx", "ir"):
        own = "onnx" if kind == "onnx" else "openvino"
        if fmt not in (None, own):
            raise CompressError(f"row {row.row_id} was measured as its {own} file ({row.backend}); the bundle ships "
                                f"that file unchanged: drop --format {fmt} (or pass --format {own})")
        name = ONNX_FILE if kind == "onnx" else IR_FILE
        shutil.copyfile(src, stage / name)
        if kind == "ir":
            shutil.copyfile(src.with_suffix(".bin"), stage / "model.bin")
        return ({"file": name, "format": own, "runtimes": measured_first(row, [sessions.ORT, sessions.OPENVINO])
                 if kind == "onnx" else [sessions.OPENVINO], "measured_file": str(src), "measured_sha256": sha256(src),
                 "input": sessions.INPUT, "output": "logits (softmax applied by the runner)"},
                {"model": "the measured file, unchanged (same sha256)"})
    model = checkpoints.load_model(src, image_size=row.image_size).model.eval()
    onnx_path = stage / ONNX_FILE
    export_onnx(model, onnx_path, torch.from_numpy(x[:32]))
    import onnx

    proto = onnx.load(str(onnx_path))
    onnx.helper.set_model_props(proto, _metadata(manifest))
    onnx.save(proto, str(onnx_path))
    if fmt == "openvino":
        _openvino_ir(onnx_path, stage / IR_FILE, manifest)
        onnx_path.unlink()
        entry = {"file": IR_FILE, "format": "openvino", "runtimes": [sessions.OPENVINO], "precision": "fp32"}
    else:
        entry = {"file": ONNX_FILE, "format": "onnx", "runtimes": measured_first(row, [sessions.ORT,
                                                                                       sessions.OPENVINO])}
    entry.update({"exported_from": str(src), "input": sessions.INPUT, "output": "logits (softmax applied by the "
                  "runner)"})
    return entry, _agreement(model, stage / entry["file"], entry["runtimes"][0], x)


def write_runner(stage: Path, manifest: dict[str, Any]) -> None:
    """predict.py, the torch-free package it runs (compress/deploy, copied whole) and a README."""
    package = stage / deploy.PACKAGE
    package.mkdir()
    for src in sorted(Path(deploy.__file__).parent.glob("*.py")):
        shutil.copyfile(src, package / src.name)
    (stage / "predict.py").write_text(deploy.LAUNCHER, encoding="utf-8")
    (stage / "README.md").write_text(readme(manifest), encoding="utf-8")


@dataclass
class TestFile:
    """One of the row's test images as the bundle lists it: a file (a photo, or a written array) or, for built-in
    data without --test-images, its pixels in memory."""

    rel: str
    label: int
    path: Path | None = None
    pixels: np.ndarray | None = None
    digest: str | None = None

    def record(self) -> dict[str, Any]:
        return {"file": self.rel, "sha256": self.digest, "label": self.label}


def test_files(data: DataBundle, split: Split, cfg: DataConfig, stage: Path | None) -> list[TestFile]:
    """The row's test images in split order; with `stage` (--test-images) also written under test-images/."""
    out: list[TestFile] = []
    samples = getattr(data.test_pool, "samples", None)
    if samples is not None:  # photo folders: the files themselves
        root = Path(cfg.test_data or cfg.data or ".").resolve()
        for i in split.test:
            path, label = Path(samples[i][0]), int(samples[i][1])
            rel = path.resolve().relative_to(root).as_posix()
            out.append(TestFile(rel, label, path, digest=sha256(path)))
            if stage is not None:
                dest = stage / "test-images" / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dest)
        return out
    if cfg.dataset != "digits":
        if stage is not None:
            raise CompressError(f"--test-images: {cfg.dataset}'s test images are not files here; drop --test-images")
        return out
    unit = datasets.load(_unit(cfg)).test_pool  # the pixels before the normalization the runner applies
    for n, i in enumerate(split.test):
        pixels, label = unit[i][0].numpy().astype(np.float32), int(unit[i][1])
        rel = f"{data.classes[label]}/{n:05d}.npy"
        item = TestFile(rel, label, pixels=pixels)
        if stage is not None:
            dest = stage / "test-images" / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            np.save(dest, pixels, allow_pickle=False)
            item.path, item.digest = dest, sha256(dest)
        out.append(item)
    return out


def _unit(cfg: DataConfig) -> DataConfig:
    """The same data in [0, 1]: the built-in digits travel as pixels before the normalization the runner applies."""
    return replace(cfg, normalization="unit")


def runner_answers(stage: Path, manifest: dict[str, Any], files: list[TestFile], x: np.ndarray) -> np.ndarray:
    """The bundle's own runner's class for each test image: from the file through its decoder where there is a
    file, from the pixels through its normalization otherwise (or the harness's tensors, for data with neither)."""
    pred = Predictor(Bundle(stage, manifest))
    if not files:
        return np.concatenate([pred.probabilities(x[s:s + 64]).argmax(1) for s in range(0, len(x), 64)]) \
            if len(x) else np.zeros(0, dtype=np.int64)
    answers = np.zeros(len(files), dtype=np.int64)
    on_disk = [i for i, f in enumerate(files) if f.path is not None]
    for i, r in zip(on_disk, pred.predict([files[i].path for i in on_disk])):  # type: ignore[misc]
        if r.error is not None:
            raise CompressError(f"the bundle's runner cannot read test image {r.file}: {r.error}")
        answers[i] = r.index
    mode = manifest["preprocessing"]["normalization"]
    in_memory = [i for i, f in enumerate(files) if f.path is None]
    for s in range(0, len(in_memory), 64):
        idx = in_memory[s:s + 64]
        batch = np.stack([preprocess.normalize(files[i].pixels, mode) for i in idx]).astype(np.float32)
        answers[idx] = pred.probabilities(batch).argmax(1)
    return answers
