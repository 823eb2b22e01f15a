"""The baseline every compressor starts from and is compared with: trained once, cached, measured.

The split is made once per data configuration and stored: every model picks its best epoch
on the same validation images and is scored on exactly the same test images.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from compress import data as data_mod
from compress import models
from compress.atomic import write_json
from compress.compressors import Artifact
from compress.data import DataBundle, DataConfig, Loaders, Split
from compress.errors import CompressError
from compress.harness import RowInfo, Subject, measure_row
from compress.models import ModelSpec
from compress.results import ResultRow, new_row_id, save_run
from compress.session import Session, Workspace, log
from compress.train import accuracy, fit

EVAL_BATCH = 64  # batch size of the accuracy pass (does not change any figure)


def stored_split(ws: Workspace, data_cfg: DataConfig, bundle: DataBundle) -> Split:
    """The stored split of this data, made and stored the first time; refused if the data changed."""
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


@dataclass
class Baseline:
    model: nn.Module
    spec: ModelSpec
    path: Any  # Path of its checkpoint
    meta: dict[str, Any]
    bundle: DataBundle
    split: Split
    data_cfg: DataConfig

    def loaders(self, batch_size: int, augment: bool = False) -> Loaders:
        return data_mod.loaders(self.bundle, self.split, batch_size, self.data_cfg.seed, augment=augment)


@dataclass
class Reference:
    """The baseline and its row measured in this invocation: what every ratio and McNemar test is against."""

    baseline: Baseline
    row: ResultRow


def ensure_baseline(session: Session) -> Baseline:
    """Load the cached baseline for this data and arch, or train it (best epoch on validation)."""
    ws, data_cfg = session.workspace, session.data
    bundle = data_mod.load(data_cfg)
    bdir = ws.baseline_dir(data_cfg, session.arch)
    if session.retrain and not session.resume:
        ws.split_path(data_cfg).unlink(missing_ok=True)
    split = stored_split(ws, data_cfg, bundle)
    if (bdir / "meta.json").exists() and (bdir / "model.pt").exists() and not session.retrain:
        return _cached(session, bdir, bundle, split)
    return _train(session, bdir, bundle, split)


def _cached(session: Session, bdir: Any, bundle: DataBundle, split: Split) -> Baseline:
    meta = json.loads((bdir / "meta.json").read_text())
    imported = models.load_model(bdir / "model.pt")
    log(f"using cached baseline {bdir / 'model.pt'} (trained {meta['train']['epochs']} epochs, best epoch "
        f"{meta['best_epoch']}, test accuracy {100 * meta['test_accuracy']:.2f}%)")
    if meta["train"] != asdict(session.baseline_train):
        log(f"note: the cached baseline was trained with {meta['train']}, not {asdict(session.baseline_train)}; "
            "pass --retrain to `compress baseline` to train it with your settings")
    return Baseline(imported.model, imported.spec, bdir / "model.pt", meta, bundle, split, session.data)


def _train(session: Session, bdir: Any, bundle: DataBundle, split: Split) -> Baseline:
    data_cfg, train_cfg, device = session.data, session.baseline_train, session.device
    log(f"training the {session.arch} baseline on {data_cfg.name} ({len(split.train)} train / {len(split.val)} val / "
        f"{len(split.test)} test images, {data_cfg.size}px, {train_cfg.epochs} epochs) on {device}")
    torch.manual_seed(data_cfg.seed)
    spec = ModelSpec(arch=session.arch, num_classes=bundle.num_classes)
    model = models.build(spec)
    ld = data_mod.loaders(bundle, split, train_cfg.batch_size, data_cfg.seed, augment=train_cfg.augment)
    checkpoint = bdir / "resume.pt"
    if checkpoint.exists() and not session.resume:
        log(f"note: an interrupted baseline training left {checkpoint}; pass --resume to continue it")
    result = fit(model, ld.train, ld.val, train_cfg, device, desc="baseline", checkpoint=checkpoint,
                 resume=session.resume)
    test_acc = accuracy(model, ld.test, device)
    ckpt = bdir / "model.pt"
    models.save_checkpoint(model, spec, ckpt, extra={"classes": bundle.classes, "image_size": data_cfg.size})
    meta = {"arch": session.arch, "data": asdict(data_cfg), "train": asdict(train_cfg),
            "best_epoch": result.best_epoch, "best_val_accuracy": result.best_val_accuracy,
            "test_accuracy": test_acc, "train_seconds": result.seconds, "history": result.history,
            "classes": bundle.classes, "fingerprint": bundle.fingerprint}
    write_json(bdir / "meta.json", meta)  # written last: a baseline without meta.json is not a cached baseline
    log(f"baseline: best epoch {result.best_epoch}, val {100 * result.best_val_accuracy:.2f}%, "
        f"test {100 * test_acc:.2f}%, {result.seconds:.0f}s; saved {ckpt}")
    return Baseline(model.cpu(), spec, ckpt, meta, bundle, split, data_cfg)


def measure_baseline(session: Session, base: Baseline) -> ResultRow:
    """Measure the baseline into a row of its own and store it."""
    config = {"arch": base.spec.arch, "train": base.meta["train"], "data": base.meta["data"]}
    info = RowInfo(dataset=base.data_cfg.name, compressor="baseline", config=config, seed=base.data_cfg.seed,
                   command=session.command, finetune_epochs=0, best_epoch=base.meta["best_epoch"],
                   train_seconds=base.meta["train_seconds"])
    row_id = new_row_id("baseline", config)
    run_dir = session.workspace.run_dir(base.data_cfg.name, "baseline", row_id)
    subject = Subject(base.model, base.spec, Artifact.fp32(base.model, base.path), base.data_cfg.size, "baseline")
    row, preds = measure_row(subject, info, session.latency, base.loaders(EVAL_BATCH).test, session.device, row_id,
                             run_dir / "model.onnx" if session.keep_onnx else None)
    save_run(session.store, row, preds, run_dir)
    return row


def reference(session: Session) -> Reference:
    """Load (or train) the baseline and measure it now, so every row of this invocation has its reference."""
    base = ensure_baseline(session)
    return Reference(base, measure_baseline(session, base))
