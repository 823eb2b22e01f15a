"""The baseline every compressor starts from and is compared with: trained once, cached, measured.

The split is made once per data configuration and stored: every model picks its best epoch
on the same validation images and is scored on exactly the same test images.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.data import datasets as data_mod
from compress.data.datasets import DataBundle, DataConfig
from compress.data.split import Loaders, Split, gaps, loaders, make_split
from compress.errors import CompressError
from compress.log import log
from compress.measuring.harness import measure_row
from compress.measuring.subject import Measurement, PairWith, RowInfo, Subject
from compress.models import checkpoints, pretrained, vgg
from compress.models.artifact import Artifact
from compress.models.vgg import ModelSpec
from compress.scaleout import dist
from compress.session import Session
from compress.store.atomic import write_json
from compress.store.digest import file_digest
from compress.store.rows import ResultRow, new_row_id
from compress.store.sqlite import save_run
from compress.store.workspace import Workspace
from compress.training import cached
from compress.training.evaluation import accuracy
from compress.training.loop import FitOptions, fit

EVAL_BATCH = 64  # batch size of the accuracy pass (does not change any figure)


def stored_split(ws: Workspace, data_cfg: DataConfig, bundle: DataBundle) -> Split:
    """The stored split of this data, made and stored the first time; refused if the data changed."""
    path = ws.split_path(data_cfg.key())
    if path.exists():
        saved = json.loads(path.read_text())
        if saved["fingerprint"] != bundle.fingerprint or saved["classes"] != bundle.classes:
            raise CompressError(
                f"the data behind {data_cfg.name} changed since its split was stored in {path} "
                f"(fingerprint {saved['fingerprint']} -> {bundle.fingerprint}, {len(saved['classes'])} -> "
                f"{len(bundle.classes)} classes): results would not be comparable. Restore the data, or "
                "pass --retrain to make a new split and baseline")
        try:
            split = Split.from_dict(saved["split"])
        except (KeyError, TypeError, ValueError):
            split, why = None, "it is not a split"
        else:
            why = split.problem(bundle)
        if split is None or why:
            raise CompressError(f"the stored split {path} cannot be used: {why}. It was edited or damaged: restore it, "
                                "or delete it (or pass --retrain) to make a new split and baseline")
        _warn_gaps(split, bundle)
        return split
    split = make_split(bundle, data_cfg)
    write_json(path, {"fingerprint": bundle.fingerprint, "classes": bundle.classes, "split": split.to_dict(),
                      "data": data_cfg.record()})
    _warn_gaps(split, bundle)
    return split


def _warn_gaps(split: Split, bundle: DataBundle) -> None:
    for note in gaps(split, bundle):
        log(f"warning: {note}")


@dataclass
class Baseline:
    model: nn.Module
    spec: ModelSpec
    path: Any  # Path of its checkpoint
    meta: dict[str, Any]
    bundle: DataBundle
    split: Split
    data_cfg: DataConfig

    @property
    def notes(self) -> tuple[str, ...]:
        """What every row measured on this split must say: the classes a part of it lacks."""
        return tuple(gaps(self.split, self.bundle))

    def loaders(self, batch_size: int, augment: bool = False) -> Loaders:
        return loaders(self.bundle, self.split, batch_size, self.data_cfg.seed, augment=augment)


@dataclass
class Reference:
    """The baseline and its row measured in this invocation: what every ratio and McNemar test is against."""

    baseline: Baseline
    row: ResultRow
    onnx: Path | None = None  # its parity-checked ONNX export, kept for this invocation (interleaved timing)

    def pair(self) -> PairWith:
        return PairWith(self.row.row_id, self.baseline.model, self.onnx)


LEAKAGE = ("imported baseline: its absolute test accuracy may be optimistic, since the checkpoint may have been "
           "trained on some of these test images (the seeds split with an unseeded random_split); the paired "
           "deltas and McNemar tests still compare like with like. Pass --test-data DIR with images it never saw "
           "for an honest absolute figure")


def baseline_dir(session: Session) -> Path:
    """The cache folder of this session's baseline (per data, source, and arch or file content)."""
    src, ws = session.baseline, session.workspace
    if src.weights is not None:
        checkpoints.require_file(Path(src.weights))
        return ws.baseline_dir(session.data.key(), f"import-{file_digest(src.weights)[:12]}")
    return ws.baseline_dir(session.data.key(), session.arch + src.tag())


def ensure_baseline(session: Session) -> Baseline:
    """The baseline: your checkpoint, or the cached one for this data and source, or one trained now.

    Everything that can be wrong with the baseline's source is checked before anything is stored.
    """
    ws, data_cfg, src = session.workspace, session.data, session.baseline
    if src.imported and session.retrain:
        raise CompressError("--retrain trains a baseline of our own, but --baseline-weights makes your checkpoint "
                            "the baseline: drop one of them")
    bundle = data_mod.load(data_cfg)
    if dist.current().main:
        ws.claim(data_cfg.name, data_cfg.source())
    bdir = baseline_dir(session)
    if src.imported:  # under torchrun rank 0 converts and caches it, then the others load that
        with dist.main_first():
            return _imported(session, bdir, bundle, _is_cached(session, bdir))
    cached = dist.same(_is_cached(session, bdir))  # every rank takes rank 0's answer: all train, or none
    state = None
    if src.pretrained is not None and not cached:  # a missing weights file fails before the split is stored
        state = pretrained.imagenet_state_dict(session.arch, src.pretrained, src.download)
    with dist.main_first():
        if session.retrain and not session.resume and dist.current().main:
            ws.split_path(data_cfg.key()).unlink(missing_ok=True)
        split = stored_split(ws, data_cfg, bundle)
    if cached:
        return _cached(session, bdir, bundle, split)
    return _train(session, bdir, bundle, split, state)


def _is_cached(session: Session, bdir: Path) -> bool:
    return (bdir / "meta.json").exists() and (bdir / "model.pt").exists() and not session.retrain


def _check_classes(path: Path, spec: ModelSpec, known: Any, bundle: DataBundle) -> None:
    if spec.num_classes != bundle.num_classes or (isinstance(known, list) and known != bundle.classes):
        theirs = f" ({', '.join(map(str, known))})" if isinstance(known, list) else ""
        raise CompressError(f"{path} predicts {spec.num_classes} classes{theirs}, but {bundle.name} has "
                            f"{bundle.num_classes} ({', '.join(bundle.classes)}): pass the data it was trained on, "
                            "with the same class folders")


def _imported(session: Session, bdir: Path, bundle: DataBundle, cached: bool) -> Baseline:
    """Your checkpoint as the baseline: validated, converted once, cached by its content hash."""
    src = session.baseline
    assert src.weights is not None
    path = Path(src.weights)
    if cached:
        meta = json.loads((bdir / "meta.json").read_text())
        model = checkpoints.load_model(bdir / "model.pt", src.arch)
        _check_classes(path, model.spec, meta.get("checkpoint_classes"), bundle)
        log(f"using {path} as the baseline (converted before: {bdir / 'model.pt'})")
    else:
        model = checkpoints.load_model(path, src.arch, None, src.trust_pickle, image_size=session.data.size)
        known = model.extra.get("classes") if isinstance(model.extra, dict) else None
        _check_classes(path, model.spec, known, bundle)
        meta = {"arch": model.spec.arch, "data": session.data.record(), "train": None, "best_epoch": None,
                "train_seconds": 0.0, "classes": bundle.classes, "checkpoint_classes": known,
                "source": {"kind": "imported", "file": str(path.resolve()), "sha256": file_digest(path),
                           "layout": model.layout, **({"keras": model.extra["keras"]} if "keras" in model.extra else {})}}
        checkpoints.save_checkpoint(model.model, model.spec, bdir / "model.pt",
                               extra={"classes": bundle.classes, "image_size": session.data.size})
        write_json(bdir / "meta.json", meta)
        log(f"using {path} as the baseline ({model.layout} layout, {model.spec.arch}, {model.spec.num_classes} "
            f"classes); no baseline training")
    split = stored_split(session.workspace, session.data, bundle)
    if not bundle.official_test:
        log(f"note: {LEAKAGE}")
    return Baseline(model.model, model.spec, bdir / "model.pt", meta, bundle, split, session.data)


def _cached(session: Session, bdir: Any, bundle: DataBundle, split: Split) -> Baseline:
    meta = json.loads((bdir / "meta.json").read_text())
    imported = checkpoints.load_model(bdir / "model.pt")
    log(f"using cached baseline {bdir / 'model.pt'} (trained {meta['train']['epochs']} epochs, best epoch "
        f"{meta['best_epoch']}, test accuracy {100 * meta['test_accuracy']:.2f}%)")
    want = asdict(session.baseline_train)
    if "patience" not in meta["train"]:  # cached before early stopping existed: the same recipe otherwise
        want.pop("patience")
    if meta["train"] != want:
        log(f"note: the cached baseline was trained with {meta['train']}, not {asdict(session.baseline_train)}; "
            "pass --retrain to `compress baseline` to train it with your settings")
    return Baseline(imported.model, imported.spec, bdir / "model.pt", meta, bundle, split, session.data)


def _train(session: Session, bdir: Any, bundle: DataBundle, split: Split,
           imagenet: dict[str, torch.Tensor] | None) -> Baseline:
    data_cfg, train_cfg, device, src = session.data, session.baseline_train, session.device, session.baseline
    log(f"training the {session.arch} baseline on {data_cfg.name} ({len(split.train)} train / {len(split.val)} val / "
        f"{len(split.test)} test images, {data_cfg.size}px, {train_cfg.epochs} epochs"
        + (f" at most, stopping after {train_cfg.patience} without a better validation epoch" if train_cfg.patience
           else "") + f") on {device}")
    torch.manual_seed(data_cfg.seed)
    spec = ModelSpec(arch=session.arch, num_classes=bundle.num_classes)
    if imagenet is not None:  # the seeds' recipe: ImageNet weights, a fresh last layer for these classes
        model = pretrained.imagenet_vgg(session.arch, bundle.num_classes, imagenet, str(src.pretrained))
        pretrained.freeze_features(model, src.freeze_features)
    else:
        model = vgg.build(spec)
    ld = loaders(bundle, split, train_cfg.batch_size, data_cfg.seed, augment=train_cfg.augment)
    checkpoint = bdir / "resume.pt"
    if checkpoint.exists() and not session.resume:
        log(f"note: an interrupted baseline training left {checkpoint}; pass --resume to continue it")
    opts = FitOptions(desc="baseline", checkpoint=checkpoint, resume=session.resume)
    if imagenet is not None and src.freeze_features:  # seed 000's recipe: the head alone, on cached features
        result = cached.fit_head(model, ld.train, ld.val, train_cfg, device, opts)
    else:
        result = fit(model, ld.train, ld.val, train_cfg, device, opts)
    pretrained.freeze_features(model, False)  # compressors fine-tune every layer
    ckpt = bdir / "model.pt"

    def store() -> dict[str, Any]:  # rank 0 alone scores and writes; the others receive the meta
        test_acc = accuracy(model, ld.test, device)
        checkpoints.save_checkpoint(model, spec, ckpt, extra={"classes": bundle.classes, "image_size": data_cfg.size})
        meta = {"arch": session.arch, "data": data_cfg.record(), "train": asdict(train_cfg),
                "best_epoch": result.best_epoch, "best_val_accuracy": result.best_val_accuracy,
                "epochs_run": len(result.history), "stopped": result.stopped,
                "test_accuracy": test_acc, "train_seconds": result.seconds, "history": result.history,
                "classes": bundle.classes, "fingerprint": bundle.fingerprint,
                "distributed": dist.current().record(train_cfg.batch_size)}
        if src.pretrained is not None:
            meta["source"] = {"kind": "pretrained", "weights": src.pretrained if src.pretrained != pretrained.IMAGENET
                              else f"torchvision {session.arch} IMAGENET1K_V1 "
                                   f"({pretrained.hub_file(session.arch).name})",
                              "freeze_features": src.freeze_features, "normalization": data_cfg.normalization}
        write_json(bdir / "meta.json", meta)  # written last: a baseline without meta.json is not a cached baseline
        log(f"baseline: best epoch {result.best_epoch}, val {100 * result.best_val_accuracy:.2f}%, "
            f"test {100 * test_acc:.2f}%, {result.seconds:.0f}s; saved {ckpt}")
        return meta

    return Baseline(model.cpu(), spec, ckpt, dist.from_main(store), bundle, split, data_cfg)


def _scratch(temp: Path) -> Path:
    """A folder for this invocation's reference exports under the workdir's tmp/, removed when the process ends
    (and at the next start if it was killed)."""
    temp.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"compress-reference-{os.getpid()}-", dir=temp))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def measure_baseline(session: Session, base: Baseline) -> tuple[ResultRow, Path | None]:
    """Measure the baseline into a row of its own and store it; returns the row and its kept ONNX export."""
    config = {"arch": base.spec.arch, "train": base.meta["train"], "data": base.meta["data"]}
    if "source" in base.meta:  # imported or ImageNet-pretrained (a baseline trained from scratch says nothing)
        config["baseline"] = base.meta["source"]
    imported = base.meta.get("source", {}).get("kind") == "imported"
    info = RowInfo(dataset=base.data_cfg.name, compressor="baseline", config=config, seed=base.data_cfg.seed,
                   command=session.command, finetune_epochs=0, best_epoch=base.meta["best_epoch"],
                   train_seconds=base.meta["train_seconds"],
                   caveats=((LEAKAGE,) if imported and not base.bundle.official_test else ()) + base.notes
                   + ((f"baseline training {base.meta['stopped']}",) if base.meta.get("stopped") else ()),
                   distributed=base.meta.get("distributed"))  # how the (cached) baseline was trained
    row_id = new_row_id("baseline", config)
    run_dir = session.workspace.run_dir(base.data_cfg.name, "baseline", row_id)
    subject = Subject(base.model, base.spec, Artifact.fp32(base.model, base.path), base.data_cfg.size, "baseline")
    onnx = (run_dir / "model.onnx" if session.keep_onnx else _scratch(session.workspace.temp) / "baseline.onnx") \
        if session.latency.onnx else None
    row, preds = measure_row(Measurement(subject, session.latency, base.loaders(EVAL_BATCH).test, session.device,
                                         keep_onnx=onnx, temp_root=session.workspace.temp), info, row_id)
    save_run(session.store, row, preds, run_dir)
    return row, onnx if onnx is not None and onnx.exists() else None


def reference(session: Session) -> Reference:
    """Load (or train) the baseline and measure it now, so every row of this invocation has its reference."""
    base = ensure_baseline(session)
    return Reference(base, *dist.from_main(lambda: measure_baseline(session, base)))  # measured once, on rank 0
