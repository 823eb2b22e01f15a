"""The one flow: data -> cached baseline -> compressor -> fine-tune -> measure -> store.

Everything here is shared by every compressor, which is what makes the comparison fair:
one split, one training loop, one harness, one results schema.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compress import data as data_mod
from compress import distill, export, measure, models, stats
from compress.atomic import atomic_open, write_json
from compress.compressors import Artifact, Context, get
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
                    device: torch.device, retrain: bool = False, resume: bool = False) -> Baseline:
    """Load the cached baseline for this data and arch, or train it (best epoch on validation)."""
    bundle = data_mod.load(data_cfg)
    bdir = ws.baseline_dir(data_cfg, arch)
    ckpt, meta_path = bdir / "model.pt", bdir / "meta.json"
    if retrain and not resume:
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
    checkpoint = bdir / "resume.pt"
    if checkpoint.exists() and not resume:
        log(f"note: an interrupted baseline training left {checkpoint}; pass --resume to continue it")
    result = fit(model, ld.train, ld.val, train_cfg, device, desc="baseline", checkpoint=checkpoint, resume=resume)
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
    source_row_id: str | None = None
    control_row_id: str | None = None


PARITY_IMAGES = 32


def _check_inputs(test_loader: Any | None, image_size: int) -> torch.Tensor:
    """Real test images for the ONNX parity check when there are any, a seeded batch otherwise."""
    if test_loader is not None:
        x, _ = next(iter(test_loader))
        return x[:PARITY_IMAGES]
    return torch.randn(8, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))


def measure_row(theory: nn.Module, spec: ModelSpec, artifact: Artifact, image_size: int, info: RowInfo,
                lat_cfg: measure.LatencyConfig, test_loader: Any | None, device: torch.device,
                row_id: str | None = None, keep_onnx: Path | None = None) -> tuple[ResultRow, np.ndarray | None]:
    """Every model goes through exactly this: theory, file size, latency, accuracy, environment.

    `theory` (the fp32 structure) gives params and MACs; `artifact` is what is deployed, and
    latency and accuracy come from it alone: an int8 row is scored by the int8 session.
    """
    theory = theory.cpu().eval()
    shape = (3, image_size, image_size)
    params, nonzero = measure.count_params(theory)
    macs = measure.count_macs(theory, shape)
    conv_macs = measure.count_conv_macs(theory, shape)
    module = artifact.module
    cpu: dict[int, measure.Latency] = {}
    gpu: dict[int, measure.Latency] = {}
    gpu_note = artifact.gpu_note or ""
    if module is not None:
        log(f"timing {info.compressor} with PyTorch on CPU (batches {', '.join(map(str, lat_cfg.batches))})")
        cpu = measure.cpu_latencies(module, shape, lat_cfg)
        if artifact.gpu_note is None:
            gpu, gpu_note = measure.gpu_latencies(module, shape, lat_cfg)
    ort: dict[int, measure.Latency] = {}
    ort_note, onnx_size, parity = "", None, None
    with tempfile.TemporaryDirectory(prefix="compress-onnx-") as tmp:
        onnx_file = artifact.onnx
        if onnx_file is not None:
            onnx_size = measure.file_size(artifact.source_onnx) if artifact.source_onnx else None
        elif not lat_cfg.ort:
            ort_note = "n/a (ONNX Runtime timing turned off)"
        elif artifact.dtype != "float32":
            ort_note = f"n/a ({artifact.backend} runs in PyTorch only)"
        else:
            onnx_file = keep_onnx or Path(tmp) / "model.onnx"
            log(f"exporting {info.compressor} to ONNX and checking it against PyTorch")
            parity = export.export_onnx(module, onnx_file, _check_inputs(test_loader, image_size))
            onnx_size = measure.file_size(onnx_file)
        if onnx_file is not None and lat_cfg.ort:
            log(f"timing {info.compressor} with ONNX Runtime on CPU")
            ort = export.ort_latencies(onnx_file, shape, lat_cfg)
        elif onnx_file is not None:
            ort_note = "n/a (ONNX Runtime timing turned off)"
        preds = acc = true = None
        if test_loader is not None:
            if module is None:
                preds, true = export.predict(onnx_file, test_loader, lat_cfg.threads)
            else:
                run_on = device if artifact.gpu_note is None else torch.device("cpu")
                preds, true = predict(module.to(run_on), test_loader, run_on)
                module.cpu()
            acc = float((preds == true).mean())
    row = ResultRow(
        row_id=row_id or new_row_id(info.compressor, info.config), created=now_iso(), dataset=info.dataset,
        compressor=info.compressor, config=info.config, config_hash=config_hash(info.config),
        baseline_row_id=info.baseline_row_id, model_path=str(artifact.file), num_classes=spec.num_classes,
        image_size=image_size, params=params, nonzero_params=nonzero, macs=macs,
        size_bytes=measure.file_size(artifact.file), cpu_b1=cpu.get(1), cpu_b32=cpu.get(32), gpu_b1=gpu.get(1),
        gpu_b32=gpu.get(32), gpu_note=gpu_note, accuracy=acc, accuracy_before_finetune=info.accuracy_before_finetune,
        test_images=len(test_loader.dataset) if test_loader is not None else 0,
        finetune_epochs=info.finetune_epochs, best_epoch=info.best_epoch, train_seconds=info.train_seconds,
        seed=info.seed, env=environment(lat_cfg.threads or measure.default_threads(), artifact.dtype),
        command=info.command, ort_b1=ort.get(1), ort_b32=ort.get(32), ort_note=ort_note,
        onnx_size_bytes=onnx_size, onnx_parity=parity, backend=artifact.backend,
        source_row_id=info.source_row_id, control_row_id=info.control_row_id, conv_macs=conv_macs,
        correct=None if preds is None else stats.encode(preds == true))
    return row, preds


def _save_run(ws: Workspace, row: ResultRow, preds: np.ndarray | None, run_dir: Path) -> None:
    """row.json beside the model, then the store: the store is the source of truth for reports."""
    write_json(run_dir / "row.json", row.to_dict())
    if preds is not None:
        with atomic_open(run_dir / "predictions.npy", "wb") as fh:
            np.save(fh, preds)
    ws.store.add(row)


def measure_baseline(ws: Workspace, base: Baseline, lat_cfg: measure.LatencyConfig, device: torch.device,
                     command: str, keep_onnx: bool = False) -> ResultRow:
    ld = data_mod.loaders(base.bundle, base.split, 64, base.data_cfg.seed)
    config = {"arch": base.spec.arch, "train": base.meta["train"], "data": base.meta["data"]}
    info = RowInfo(dataset=base.data_cfg.name, compressor="baseline", config=config, seed=base.data_cfg.seed,
                   command=command, finetune_epochs=0, best_epoch=base.meta["best_epoch"],
                   train_seconds=base.meta["train_seconds"])
    row_id = new_row_id("baseline", config)
    run_dir = ws.run_dir(base.data_cfg.name, "baseline", row_id)
    row, preds = measure_row(base.model, base.spec, Artifact.fp32(base.model, base.path), base.data_cfg.size, info,
                             lat_cfg, ld.test, device, row_id, run_dir / "model.onnx" if keep_onnx else None)
    _save_run(ws, row, preds, run_dir)
    return row


# ---------------------------------------------------------------------------------------
# Starting from a stored run instead of the baseline (--from): e.g. prune, then int8
# ---------------------------------------------------------------------------------------

@dataclass
class Source:
    row: ResultRow  # the source re-measured in this invocation (same machine state as the new row)
    model: nn.Module
    spec: ModelSpec


def find_row(ws: Workspace, ref: str, dataset: str) -> ResultRow:
    """A stored row by id, id prefix, or run folder."""
    rows = ws.store.rows(dataset)
    as_dir = Path(ref).resolve()
    hits = [r for r in rows if r.row_id == ref] or \
           [r for r in rows if r.row_id.startswith(ref) or Path(r.model_path).resolve().parent == as_dir]
    if not hits:
        recent = ", ".join(r.row_id for r in rows[-3:]) or "none yet"
        raise CompressError(f"--from {ref}: no stored run of dataset {dataset!r} has that row id or folder "
                            f"(newest: {recent}); run folders under {ws.root / dataset} are named by row id")
    ids = {r.row_id for r in hits}
    if len(ids) > 1:
        raise CompressError(f"--from {ref} matches {len(ids)} runs ({', '.join(sorted(ids)[:3])}...): "
                            "give more of the row id")
    old = hits[-1]
    if old.backend not in (None, "pytorch fp32") or not str(old.model_path).endswith(".pt"):
        raise CompressError(f"--from {old.row_id} is a {old.compressor} run ({old.backend}); only fp32 PyTorch "
                            "runs can be compressed further: quantize last")
    if not Path(old.model_path).exists():
        raise CompressError(f"--from {old.row_id}: its model file {old.model_path} is gone; run that step again")
    return old


def load_source(ws: Workspace, old: ResultRow, base: Baseline, base_row: ResultRow,
                lat_cfg: measure.LatencyConfig, device: torch.device, test_loader: Any) -> Source:
    """Load a stored fp32 run and re-measure it now, so the new row is compared at equal conditions."""
    if old.image_size != base.data_cfg.size:
        raise CompressError(f"--from {old.row_id} was measured at {old.image_size}px, this run is at "
                            f"{base.data_cfg.size}px: pass --image-size {old.image_size}")
    imported = models.load_model(Path(old.model_path), num_classes=base.bundle.num_classes)
    if old.compressor == "baseline":
        return Source(base_row, imported.model, imported.spec)
    if old.baseline_row_id == base_row.row_id:  # measured in this invocation already (e.g. by `run all`)
        return Source(old, imported.model, imported.spec)
    info = RowInfo(dataset=old.dataset, compressor=old.compressor, config=old.config, seed=old.seed,
                   command=old.command, baseline_row_id=base_row.row_id, finetune_epochs=old.finetune_epochs,
                   best_epoch=old.best_epoch, train_seconds=old.train_seconds,
                   accuracy_before_finetune=old.accuracy_before_finetune, source_row_id=old.source_row_id)
    log(f"re-measuring --from {old.row_id} ({old.compressor}) beside this run's baseline")
    row, _ = measure_row(imported.model, imported.spec, Artifact.fp32(imported.model, Path(old.model_path)),
                         old.image_size, info, lat_cfg, test_loader, device)
    ws.store.add(row)
    return Source(row, imported.model, imported.spec)


def run_compressor(ws: Workspace, name: str, comp_cfg: Any, data_cfg: DataConfig, arch: str,
                   baseline_cfg: TrainConfig, finetune_cfg: TrainConfig, lat_cfg: measure.LatencyConfig,
                   device: torch.device, command: str, base: Baseline | None = None,
                   base_row: ResultRow | None = None, source: str | None = None,
                   keep_onnx: bool = False, control_row_id: str | None = None,
                   resume: bool = False) -> tuple[ResultRow, ResultRow]:
    """Compress the cached baseline (or the stored run `source`), fine-tune, measure both alike.

    A sweep passes `base` and `base_row` so the baseline is loaded and timed once for all points.
    """
    comp = get(name)
    old = find_row(ws, source, data_cfg.name) if source else None  # a typo fails before any work starts
    base = base or ensure_baseline(ws, data_cfg, arch, baseline_cfg, device, resume=resume)
    ld: Loaders = data_mod.loaders(base.bundle, base.split, finetune_cfg.batch_size, data_cfg.seed,
                                   augment=finetune_cfg.augment)
    base_row = base_row or measure_baseline(ws, base, lat_cfg, device, command, keep_onnx)
    start, start_spec, src_row = base.model, base.spec, None
    if old is not None:
        src = load_source(ws, old, base, base_row, lat_cfg, device, ld.test)
        start, start_spec, src_row = src.model, src.spec, src.row
    epochs = finetune_cfg.epochs if comp.finetune else 0
    config = {"compressor": asdict(comp_cfg), "finetune": asdict(finetune_cfg) if comp.finetune else None,
              "arch": arch, "data": asdict(data_cfg)}
    if src_row is not None and src_row.compressor != "baseline":
        config["source"] = {"compressor": src_row.compressor, "config_hash": src_row.config_hash}
    row_id = new_row_id(name, config)
    run_dir = ws.run_dir(data_cfg.name, name, row_id)
    pending = interrupted_run(ws, data_cfg.name, name, config)
    if pending is not None and resume:
        row_id, run_dir = pending.name, pending
    elif pending is not None:
        log(f"note: an interrupted run of this configuration is in {pending}; pass --resume to continue it")
    elif resume:
        log(f"{name}: no interrupted run of this configuration to resume; starting afresh")
    write_json(run_dir / "config.json", {"command": command, **config})  # first: an interrupted run is findable
    ctx = Context(loaders=ld, device=device, num_classes=base.bundle.num_classes, image_size=data_cfg.size,
                  run_dir=run_dir, threads=lat_cfg.threads, keep_onnx=keep_onnx)
    torch.manual_seed(data_cfg.seed)
    theory = copy.deepcopy(start)
    out = comp.fn(theory, start_spec, comp_cfg, ctx)
    result = TrainResult(best_epoch=0, best_val_accuracy=float("nan"), seconds=0.0)
    if isinstance(out, Artifact):  # int8 and the like: measured as what it is, nothing to fine-tune
        artifact, spec, before = out, start_spec, None
    else:
        model, spec = out
        before = accuracy(model.to(device), ld.test, device)
        kd = getattr(comp_cfg, "distillation", None)
        if epochs and kd is not None:
            log(f"{name}: distilling from the baseline for {epochs} epochs (T={kd.temperature}, alpha={kd.alpha})")
            train = distill.with_teacher(ld.train, base.model, device, finetune_cfg.augment)
            result = fit(model, train, ld.val, finetune_cfg, device, desc=f"{name} distil",
                         loss_fn=lambda s, y, t: distill.kd_loss(s, t, y, kd), checkpoint=run_dir / "resume.pt",
                         resume=resume)
            base.model.cpu()
        elif epochs:
            log(f"{name}: test accuracy before fine-tuning {100 * before:.2f}%; fine-tuning {epochs} epochs")
            result = fit(model, ld.train, ld.val, finetune_cfg, device, desc=f"{name} fine-tune",
                         checkpoint=run_dir / "resume.pt", resume=resume)
        if comp.finalize is not None:
            model = comp.finalize(model)
        theory = model
        model_path = run_dir / "model.pt"
        models.save_checkpoint(model, spec, model_path, extra={"compressor": name, "config": config,
                                                               "classes": base.bundle.classes,
                                                               "image_size": data_cfg.size})
        artifact = Artifact.fp32(model, model_path)
    info = RowInfo(dataset=data_cfg.name, compressor=name, config=config, seed=data_cfg.seed, command=command,
                   baseline_row_id=base_row.row_id, finetune_epochs=epochs,
                   best_epoch=result.best_epoch if epochs else None, train_seconds=result.seconds,
                   accuracy_before_finetune=before, source_row_id=src_row.row_id if src_row else None,
                   control_row_id=control_row_id)
    row, preds = measure_row(theory, spec, artifact, data_cfg.size, info, lat_cfg, ld.test, device, row_id,
                             run_dir / "model.onnx" if keep_onnx else None)
    _save_run(ws, row, preds, run_dir)
    return base_row, row


def interrupted_run(ws: Workspace, dataset: str, name: str, config: dict[str, Any]) -> Path | None:
    """The newest run folder of this exact configuration that holds an epoch checkpoint."""
    want = json.loads(json.dumps(config, default=str))
    for run_dir in sorted((ws.root / dataset / name).glob("*/resume.pt"), reverse=True):
        try:
            saved = json.loads((run_dir.parent / "config.json").read_text())
        except (OSError, ValueError):
            continue
        saved.pop("command", None)
        if saved == want and not (run_dir.parent / "row.json").exists():
            return run_dir.parent
    return None


def run_with_control(ws: Workspace, name: str, comp_cfg: Any, data_cfg: DataConfig, arch: str,
                     baseline_cfg: TrainConfig, finetune_cfg: TrainConfig, lat_cfg: measure.LatencyConfig,
                     device: torch.device, command: str, base: Baseline | None = None,
                     base_row: ResultRow | None = None, **kw: Any) -> list[ResultRow]:
    """Run `comp_cfg`, and first its control when it declares one (e.g. the student without KD).

    Returns [baseline row, control row (if any), row]; the row names its control.
    """
    control_cfg = getattr(comp_cfg, "control", lambda: None)()
    args = (data_cfg, arch, baseline_cfg, finetune_cfg, lat_cfg, device, command)
    rows: list[ResultRow] = []
    control_id = None
    if control_cfg is not None:
        if kw.get("source"):
            find_row(ws, kw["source"], data_cfg.name)  # fail on a bad --from before training anything
        base = base or ensure_baseline(ws, data_cfg, arch, baseline_cfg, device, resume=kw.get("resume", False))
        log(f"{name}: the control first (same model, data and epochs, no teacher)")
        base_row, control = run_compressor(ws, name, control_cfg, *args, base=base, base_row=base_row, **kw)
        rows.append(control)
        control_id = control.row_id
    base_row, row = run_compressor(ws, name, comp_cfg, *args, base=base, base_row=base_row,
                                   control_row_id=control_id, **kw)
    return [base_row, *rows, row]
