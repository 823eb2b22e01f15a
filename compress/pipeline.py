"""The one flow: data -> cached baseline -> compressor -> fine-tune -> measure -> store.

Everything here is shared by every compressor, which is what makes the comparison fair:
one split, one training loop, one harness, one results schema.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compress import data as data_mod
from compress import measure, models
from compress.atomic import atomic_open, write_json
from compress.compressors import Context, get
from compress.data import DataBundle, DataConfig, Loaders, Split
from compress.errors import CompressError
from compress.models import ModelSpec
from compress.results import ResultRow, Store, config_hash, environment, new_row_id, now_iso
from compress.train import TrainConfig, TrainResult, accuracy, fit, predict


@dataclass(frozen=True)
class FinetuneConfig(TrainConfig):
    """Fine-tuning after compression: the seeds' optimiser, fewer epochs."""

    epochs: int = 3


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Workspace:
    """Where runs, baselines, splits and the results store live (default ./runs)."""

    root: Path

    @classmethod
    def default(cls) -> "Workspace":
        return cls(Path(os.environ.get("COMPRESS_HOME", "runs")))

    @property
    def store(self) -> Store:
        return Store(self.root / "results.sqlite")

    def split_path(self, data_cfg: DataConfig) -> Path:
        return self.root / "splits" / f"{data_cfg.key()}.json"

    def baseline_dir(self, data_cfg: DataConfig, arch: str) -> Path:
        return self.root / "baselines" / f"{data_cfg.key()}-{arch}"

    def run_dir(self, dataset: str, compressor: str, row_id: str) -> Path:
        return self.root / dataset / compressor / row_id


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CompressError("--device cuda was asked for, but no CUDA device is available here: use --device cpu")
    if name not in ("cpu", "cuda"):
        raise CompressError(f"unknown --device {name!r}: expected auto, cpu or cuda")
    return torch.device(name)


# ---------------------------------------------------------------------------------------
# The split: made once per data configuration, stored, checked against the data each time
# ---------------------------------------------------------------------------------------

def stored_split(ws: Workspace, data_cfg: DataConfig, bundle: DataBundle) -> Split:
    path = ws.split_path(data_cfg)
    if path.exists():
        saved = json.loads(path.read_text())
        if saved["fingerprint"] != bundle.fingerprint or saved["classes"] != bundle.classes:
            raise CompressError(
                f"the data behind {data_cfg.name} changed since its split was stored in {path} "
                f"(fingerprint {saved['fingerprint']} -> {bundle.fingerprint}, {len(saved['classes'])} -> "
                f"{len(bundle.classes)} classes): results would not be comparable. Restore the data, or "
                "pass --retrain to make a new split and baseline")
        return Split.from_dict(saved["split"])
    split = data_mod.make_split(bundle, data_cfg)
    write_json(path, {"fingerprint": bundle.fingerprint, "classes": bundle.classes, "split": split.to_dict(),
                      "data": asdict(data_cfg)})
    return split


# ---------------------------------------------------------------------------------------
# Baseline
# ---------------------------------------------------------------------------------------

@dataclass
class Baseline:
    model: nn.Module
    spec: ModelSpec
    path: Path
    meta: dict[str, Any]
    bundle: DataBundle
    split: Split
    data_cfg: DataConfig


def ensure_baseline(ws: Workspace, data_cfg: DataConfig, arch: str, train_cfg: TrainConfig,
                    device: torch.device, retrain: bool = False) -> Baseline:
    """Load the cached baseline for this data and arch, or train it (best epoch on validation)."""
    bundle = data_mod.load(data_cfg)
    bdir = ws.baseline_dir(data_cfg, arch)
    ckpt, meta_path = bdir / "model.pt", bdir / "meta.json"
    if retrain:
        ws.split_path(data_cfg).unlink(missing_ok=True)
    split = stored_split(ws, data_cfg, bundle)
    if meta_path.exists() and ckpt.exists() and not retrain:
        meta = json.loads(meta_path.read_text())
        imported = models.load_model(ckpt)
        log(f"using cached baseline {ckpt} (trained {meta['train']['epochs']} epochs, best epoch "
            f"{meta['best_epoch']}, test accuracy {100 * meta['test_accuracy']:.2f}%)")
        if meta["train"] != asdict(train_cfg):
            log(f"note: the cached baseline was trained with {meta['train']}, not {asdict(train_cfg)}; "
                "pass --retrain to `compress baseline` to train it with your settings")
        return Baseline(imported.model, imported.spec, ckpt, meta, bundle, split, data_cfg)

    log(f"training the {arch} baseline on {data_cfg.name} ({len(split.train)} train / {len(split.val)} val / "
        f"{len(split.test)} test images, {data_cfg.size}px, {train_cfg.epochs} epochs) on {device}")
    torch.manual_seed(data_cfg.seed)
    spec = ModelSpec(arch=arch, num_classes=bundle.num_classes)
    model = models.build(spec)
    ld = data_mod.loaders(bundle, split, train_cfg.batch_size, data_cfg.seed, augment=train_cfg.augment)
    result = fit(model, ld.train, ld.val, train_cfg, device, desc="baseline")
    test_acc = accuracy(model, ld.test, device)
    models.save_checkpoint(model, spec, ckpt, extra={"classes": bundle.classes, "image_size": data_cfg.size})
    meta = {"arch": arch, "data": asdict(data_cfg), "train": asdict(train_cfg), "best_epoch": result.best_epoch,
            "best_val_accuracy": result.best_val_accuracy, "test_accuracy": test_acc,
            "train_seconds": result.seconds, "history": result.history, "classes": bundle.classes,
            "fingerprint": bundle.fingerprint}
    write_json(meta_path, meta)  # written last: a baseline without meta.json is not a cached baseline
    log(f"baseline: best epoch {result.best_epoch}, val {100 * result.best_val_accuracy:.2f}%, "
        f"test {100 * test_acc:.2f}%, {result.seconds:.0f}s; saved {ckpt}")
    return Baseline(model.cpu(), spec, ckpt, meta, bundle, split, data_cfg)


# ---------------------------------------------------------------------------------------
# Measuring a model into a row
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RowInfo:
    """What the harness cannot see by looking at the model: where it came from."""

    dataset: str
    compressor: str
    config: dict[str, Any]
    seed: int
    command: str
    baseline_row_id: str | None = None
    finetune_epochs: int = 0
    best_epoch: int | None = None
    train_seconds: float = 0.0
    accuracy_before_finetune: float | None = None


def measure_row(model: nn.Module, spec: ModelSpec, model_path: Path, image_size: int, info: RowInfo,
                lat_cfg: measure.LatencyConfig, test_loader: Any | None, device: torch.device,
                row_id: str | None = None) -> tuple[ResultRow, np.ndarray | None]:
    """Every model goes through exactly this: theory, file size, latency, accuracy, environment."""
    model = model.cpu().eval()
    shape = (3, image_size, image_size)
    params, nonzero = measure.count_params(model)
    macs = measure.count_macs(model, shape)
    log(f"timing {info.compressor} on CPU (batches {', '.join(map(str, lat_cfg.batches))})")
    cpu = measure.cpu_latencies(model, shape, lat_cfg)
    gpu, gpu_note = measure.gpu_latencies(model, shape, lat_cfg)
    preds = None
    acc = None
    if test_loader is not None:
        preds, true = predict(model.to(device), test_loader, device)
        acc = float((preds == true).mean())
        model.cpu()
    row = ResultRow(
        row_id=row_id or new_row_id(info.compressor, info.config), created=now_iso(), dataset=info.dataset,
        compressor=info.compressor, config=info.config, config_hash=config_hash(info.config),
        baseline_row_id=info.baseline_row_id, model_path=str(model_path), num_classes=spec.num_classes,
        image_size=image_size, params=params, nonzero_params=nonzero, macs=macs,
        size_bytes=measure.file_size(model_path), cpu_b1=cpu.get(1), cpu_b32=cpu.get(32), gpu_b1=gpu.get(1),
        gpu_b32=gpu.get(32), gpu_note=gpu_note, accuracy=acc, accuracy_before_finetune=info.accuracy_before_finetune,
        test_images=len(test_loader.dataset) if test_loader is not None else 0,
        finetune_epochs=info.finetune_epochs, best_epoch=info.best_epoch, train_seconds=info.train_seconds,
        seed=info.seed, env=environment(lat_cfg.threads or measure.default_threads()), command=info.command)
    return row, preds


def _save_run(ws: Workspace, row: ResultRow, preds: np.ndarray | None, run_dir: Path) -> None:
    """row.json beside the model, then the store: the store is the source of truth for reports."""
    write_json(run_dir / "row.json", row.to_dict())
    if preds is not None:
        with atomic_open(run_dir / "predictions.npy", "wb") as fh:
            np.save(fh, preds)
    ws.store.add(row)


def measure_baseline(ws: Workspace, base: Baseline, lat_cfg: measure.LatencyConfig, device: torch.device,
                     command: str) -> ResultRow:
    ld = data_mod.loaders(base.bundle, base.split, 64, base.data_cfg.seed)
    config = {"arch": base.spec.arch, "train": base.meta["train"], "data": base.meta["data"]}
    info = RowInfo(dataset=base.data_cfg.name, compressor="baseline", config=config, seed=base.data_cfg.seed,
                   command=command, finetune_epochs=0, best_epoch=base.meta["best_epoch"],
                   train_seconds=base.meta["train_seconds"])
    row, preds = measure_row(base.model, base.spec, base.path, base.data_cfg.size, info, lat_cfg, ld.test, device)
    _save_run(ws, row, preds, ws.run_dir(row.dataset, "baseline", row.row_id))
    return row


def run_compressor(ws: Workspace, name: str, comp_cfg: Any, data_cfg: DataConfig, arch: str,
                   baseline_cfg: TrainConfig, finetune_cfg: TrainConfig, lat_cfg: measure.LatencyConfig,
                   device: torch.device, command: str, base: Baseline | None = None,
                   base_row: ResultRow | None = None) -> tuple[ResultRow, ResultRow]:
    """Compress the cached baseline, fine-tune, and measure both with the same harness.

    A sweep passes `base` and `base_row` so the baseline is loaded and timed once for all points.
    """
    comp = get(name)
    base = base or ensure_baseline(ws, data_cfg, arch, baseline_cfg, device)
    ld: Loaders = data_mod.loaders(base.bundle, base.split, finetune_cfg.batch_size, data_cfg.seed,
                                   augment=finetune_cfg.augment)
    ctx = Context(loaders=ld, device=device, num_classes=base.bundle.num_classes, image_size=data_cfg.size)
    torch.manual_seed(data_cfg.seed)
    model, spec = comp.fn(copy.deepcopy(base.model), base.spec, comp_cfg, ctx)
    before = accuracy(model.to(device), ld.test, device)
    result = TrainResult(best_epoch=0, best_val_accuracy=float("nan"), seconds=0.0)
    epochs = finetune_cfg.epochs if comp.finetune else 0
    if epochs:
        log(f"{name}: test accuracy before fine-tuning {100 * before:.2f}%; fine-tuning {epochs} epochs")
        result = fit(model, ld.train, ld.val, finetune_cfg, device, desc=f"{name} fine-tune")
    if comp.finalize is not None:
        model = comp.finalize(model)
    config = {"compressor": asdict(comp_cfg), "finetune": asdict(finetune_cfg) if comp.finetune else None,
              "arch": arch, "data": asdict(data_cfg)}
    row_id = new_row_id(name, config)
    run_dir = ws.run_dir(data_cfg.name, name, row_id)
    model_path = run_dir / "model.pt"
    models.save_checkpoint(model, spec, model_path, extra={"compressor": name, "config": config,
                                                           "classes": base.bundle.classes,
                                                           "image_size": data_cfg.size})
    write_json(run_dir / "config.json", {"command": command, **config})

    base_row = base_row or measure_baseline(ws, base, lat_cfg, device, command)
    info = RowInfo(dataset=data_cfg.name, compressor=name, config=config, seed=data_cfg.seed, command=command,
                   baseline_row_id=base_row.row_id, finetune_epochs=epochs,
                   best_epoch=result.best_epoch if epochs else None, train_seconds=result.seconds,
                   accuracy_before_finetune=before)
    row, preds = measure_row(model, spec, model_path, data_cfg.size, info, lat_cfg, ld.test, device, row_id)
    _save_run(ws, row, preds, run_dir)
    return base_row, row
