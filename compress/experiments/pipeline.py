"""Orchestration only: baseline -> compressor -> fine-tune -> harness -> row -> store.

Everything here is shared by every compressor, which is what makes the comparison fair:
one split, one training loop, one harness, one results schema. Nothing here knows which
compressor ran: what differs between them is declared at registration.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress import compressors
from compress.compressors import Context, Stored
from compress.data.split import Loaders
from compress.errors import CompressError
from compress.experiments.baseline import Reference, reference
from compress.log import log
from compress.measuring.harness import measure_row
from compress.measuring.subject import Measurement, PairWith, RowInfo, Subject
from compress.models import checkpoints
from compress.models.artifact import Artifact
from compress.models.vgg import ModelSpec
from compress.scaleout import dist
from compress.session import Session
from compress.store.atomic import write_json
from compress.store.rows import ResultRow, new_row_id
from compress.store.sqlite import save_run
from compress.store.workspace import Workspace
from compress.training import cached, kd
from compress.training.config import FinetuneConfig
from compress.training.evaluation import accuracy
from compress.training.loop import FitOptions, TrainResult, fit


@dataclass(frozen=True)
class Job:
    """One compressor run: which compressor, its settings, its training budget, and where it starts."""

    compressor: str
    config: Any
    finetune: FinetuneConfig
    from_run: str | None = None  # --from: a stored fp32 run to compress instead of the baseline


@dataclass
class Start:
    """The model a job compresses: the baseline, or a stored run re-measured beside it (--from)."""

    model: nn.Module
    spec: ModelSpec
    row: ResultRow | None = None  # the --from run's row; None when starting from the baseline


def find_row(ws: Workspace, ref: str, dataset: str) -> ResultRow:
    """A stored fp32 row by id, id prefix, or run folder (the value of --from)."""
    rows = ws.store.rows(dataset)
    as_dir = Path(ref).resolve()
    hits = [r for r in rows if r.row_id == ref] or \
           [r for r in rows if r.row_id.startswith(ref) or Path(r.model_path).resolve().parent == as_dir]
    if not hits:
        recent = ", ".join(r.row_id for r in rows[-3:]) or "none yet"
        raise CompressError(f"--from {ref}: no stored run of dataset {dataset!r} has that row id or folder "
                            f"(newest: {recent}); run folders under {ws.dataset_dir(dataset)} are named by row id")
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


def start_from(session: Session, old: ResultRow, ref: Reference, test_loader: Any) -> Start:
    """Load a stored fp32 run and re-measure it now, so the new row is compared at equal conditions."""
    size = ref.baseline.data_cfg.size
    if old.image_size != size:
        raise CompressError(f"--from {old.row_id} was measured at {old.image_size}px, this run is at "
                            f"{size}px: pass --image-size {old.image_size}")
    imported = checkpoints.load_model(Path(old.model_path), num_classes=ref.baseline.bundle.num_classes)
    if old.compressor == "baseline":
        return Start(imported.model, imported.spec, ref.row)
    if old.baseline_row_id == ref.row.row_id:  # measured in this invocation already (e.g. by `run all`)
        return Start(imported.model, imported.spec, old)
    info = RowInfo.remeasured(old, ref.row.row_id)
    log(f"re-measuring --from {old.row_id} ({old.compressor}) beside this run's baseline")
    subject = Subject(imported.model, imported.spec, Artifact.fp32(imported.model, Path(old.model_path)),
                      old.image_size, old.compressor)

    def remeasure() -> ResultRow:  # rank 0 alone under torchrun
        row, _ = measure_row(Measurement(subject, session.latency, test_loader, session.device, ref.pair(),
                                         temp_root=session.workspace.temp), info)
        session.store.add(row)
        return row

    return Start(imported.model, imported.spec, dist.from_main(remeasure))


def interrupted_run(ws: Workspace, dataset: str, name: str, config: dict[str, Any]) -> Path | None:
    """The newest run folder of this exact configuration that holds an epoch checkpoint."""
    want = json.loads(json.dumps(config, default=str))
    for run_dir in sorted(ws.compressor_dir(dataset, name).glob("*/resume.pt"), reverse=True):
        try:
            saved = json.loads((run_dir.parent / "config.json").read_text())
        except (OSError, ValueError):
            continue
        saved.pop("command", None)
        if saved == want and not (run_dir.parent / "row.json").exists():
            return run_dir.parent
    return None


def _run_dir(session: Session, job: Job, config: dict[str, Any]) -> tuple[str, Path]:
    """A fresh run folder, or the interrupted one of this configuration with --resume."""
    dataset = session.data.name
    row_id = new_row_id(job.compressor, config)
    run_dir = session.workspace.run_dir(dataset, job.compressor, row_id)
    pending = interrupted_run(session.workspace, dataset, job.compressor, config)
    if pending is not None and session.resume:
        row_id, run_dir = pending.name, pending
    elif pending is not None:
        log(f"note: an interrupted run of this configuration is in {pending}; pass --resume to continue it")
    elif session.resume:
        log(f"{job.compressor}: no interrupted run of this configuration to resume; starting afresh")
    write_json(run_dir / "config.json", {"command": session.command, **config})  # first: findable if interrupted
    return row_id, run_dir


def _train(session: Session, job: Job, model: nn.Module, ld: Loaders, ref: Reference,
           run_dir: Path) -> TrainResult:
    """Fine-tune (or distil into) the compressed model for the job's budget; best epoch on validation."""
    epochs, device, ft = job.finetune.epochs, session.device, job.finetune
    teacher = kd.teacher_of(job.config)
    if teacher is not None:
        log(f"{job.compressor}: distilling from the baseline for {epochs} epochs "
            f"(T={teacher.temperature}, alpha={teacher.alpha})")
        train = kd.with_teacher(ld.train, ref.baseline.model, device, ft.augment)
        try:
            return fit(model, train, ld.val, ft, device, FitOptions(
                f"{job.compressor} distil", lambda s, y, t: kd.kd_loss(s, t, y, teacher), run_dir / "resume.pt",
                session.resume))
        finally:
            ref.baseline.model.cpu()
    opts = FitOptions(f"{job.compressor} fine-tune", checkpoint=run_dir / "resume.pt", resume=session.resume)
    if ft.freeze_features:  # the head alone, on the convolutions' outputs computed once
        return cached.fit_head(model, ld.train, ld.val, ft, device, opts)
    return fit(model, ld.train, ld.val, ft, device, opts)


def _pair(artifact: Artifact, ref: Reference, start: Start) -> PairWith:
    """What a row's speed-ups are timed against: the baseline; lower precision against its own fp32 source."""
    if artifact.dtype == "float32":
        return ref.pair()
    source = start.row.row_id if start.row is not None else ref.row.row_id
    return PairWith(source, start.model if artifact.module is not None else None, artifact.fp32_onnx)


@dataclass
class _Step:
    """One compressor run once its folder is chosen: compress, (train), then measure and store."""

    session: Session
    job: Job
    ref: Reference
    start: Start
    ld: Loaders
    config: dict[str, Any]
    row_id: str
    run_dir: Path
    control_row_id: str | None = None

    def compress(self) -> Artifact | tuple[nn.Module, ModelSpec]:
        s = self.session
        ctx = Context(loaders=self.ld, device=s.device, num_classes=self.ref.baseline.bundle.num_classes,
                      image_size=s.data.size, run_dir=self.run_dir, threads=s.latency.threads, keep_onnx=s.keep_onnx)
        torch.manual_seed(s.data.seed)  # the same model on every rank under torchrun
        return compressors.get(self.job.compressor).fn(copy.deepcopy(self.start.model), self.start.spec,
                                                       self.job.config, ctx)

    def before(self, model: nn.Module) -> float:
        return accuracy(model.to(self.session.device), self.ld.test, self.session.device)

    def finish(self, out: Artifact | tuple[nn.Module, ModelSpec], result: TrainResult | None,
               before: float | None) -> ResultRow:
        """Save the model, measure it beside the baseline, store the row (rank 0 alone)."""
        s, job, comp = self.session, self.job, compressors.get(self.job.compressor)
        if isinstance(out, Artifact):  # int8 and the like: measured as what it is, nothing to fine-tune
            artifact, fp32, spec = out, None, self.start.spec
        else:
            fp32, spec = out
            if comp.finalize is not None:
                fp32 = comp.finalize(fp32)
            checkpoints.save_checkpoint(fp32, spec, self.run_dir / "model.pt", extra={
                "compressor": job.compressor, "config": self.config, "classes": self.ref.baseline.bundle.classes,
                "image_size": s.data.size})
            artifact = Artifact.fp32(fp32, self.run_dir / "model.pt")
        trained = result is not None
        info = RowInfo(dataset=s.data.name, compressor=job.compressor, config=self.config, seed=s.data.seed,
                       command=s.command, baseline_row_id=self.ref.row.row_id, finetune_epochs=job.finetune.epochs
                       if trained else 0, best_epoch=result.best_epoch if result else None,
                       train_seconds=result.seconds if result else 0.0, accuracy_before_finetune=before,
                       source_row_id=self.start.row.row_id if self.start.row else None,
                       control_row_id=self.control_row_id,
                       caveats=((cached.describe(result),) if result and result.cache_seconds is not None else ())
                       + self.ref.baseline.notes,
                       facts=artifact.facts,
                       distributed=dist.current().record(job.finetune.batch_size if trained else None))
        subject = Subject(fp32 if fp32 is not None else self.start.model, spec, artifact, s.data.size,
                          job.compressor)
        m = Measurement(subject, s.latency, self.ld.test, s.device, _pair(artifact, self.ref, self.start),
                        self.run_dir / "model.onnx" if s.keep_onnx else None, temp_root=s.workspace.temp)
        row, preds = measure_row(m, info, self.row_id)
        save_run(s.store, row, preds, self.run_dir)
        return row


def run_compressor(session: Session, job: Job, ref: Reference | None = None,
                   control_row_id: str | None = None) -> tuple[ResultRow, ResultRow]:
    """Compress the baseline (or the --from run), fine-tune, measure both alike; returns (baseline row, row).

    A sweep passes `ref` so the baseline is loaded and timed once for all points. Under torchrun
    every rank compresses and trains (DDP); rank 0 alone measures and writes, and every rank
    returns its rows.
    """
    comp = compressors.get(job.compressor)
    old = dist.from_main(lambda: find_row(session.workspace, job.from_run, session.data.name)) \
        if job.from_run else None  # a bad --from fails before any work
    ref = ref or reference(session)
    ld = ref.baseline.loaders(job.finetune.batch_size, job.finetune.augment)
    start = start_from(session, old, ref, ld.test) if old else Start(ref.baseline.model, ref.baseline.spec)
    if comp.resolve is not None:  # settings taken from stored results (e.g. per-layer amounts of a scan)
        job = replace(job, config=comp.resolved(job.config, stored_for(session, ref, start)))
    epochs = job.finetune.epochs if comp.finetune else 0
    config = {"compressor": asdict(job.config), "finetune": asdict(job.finetune) if comp.finetune else None,
              "arch": ref.baseline.spec.arch, "data": session.data.record()}
    if start.row is not None and start.row.compressor != "baseline":
        config["source"] = {"compressor": start.row.compressor, "config_hash": start.row.config_hash}
    row_id, run_dir = dist.from_main(lambda: _run_dir(session, job, config))
    step = _Step(session, job, ref, start, ld, config, row_id, run_dir, control_row_id)
    if not epochs:  # nothing to train: rank 0 compresses and measures, the others only wait for the row
        return ref.row, dist.from_main(lambda: _untrained(step))
    dist.current().per_rank(job.finetune.batch_size)  # an uneven global batch fails before compressing
    fp32, spec = step.compress()  # type: ignore[misc]  # a compressor that fine-tunes returns a module
    before = dist.from_main(lambda: step.before(fp32))
    log(f"{job.compressor}: test accuracy before training {100 * before:.2f}%; {epochs} epochs")
    result = _train(session, job, fp32, ld, ref, run_dir)
    return ref.row, dist.from_main(lambda: step.finish((fp32, spec), result, before))


def stored_for(session: Session, ref: Reference, start: Start) -> Stored:
    """What a compressor may read of stored results for this baseline (see `Compressor.resolve`)."""
    return Stored(model=start.model, image_size=session.data.size,
                  sensitivity_dir=session.workspace.sensitivity_dir(session.data.name),
                  baseline_path=Path(ref.baseline.path), from_row=start.row.row_id if start.row else None)


def _untrained(step: _Step) -> ResultRow:
    out = step.compress()
    return step.finish(out, None, None if isinstance(out, Artifact) else step.before(out[0]))


def run_with_control(session: Session, job: Job, ref: Reference | None = None) -> list[ResultRow]:
    """Run the job, and first its control when its config declares one (e.g. the student without KD).

    Returns [baseline row, control row (if any), row]; the row names its control.
    """
    control_cfg = kd.control_of(job.config)
    rows: list[ResultRow] = []
    control_id = None
    if control_cfg is not None:
        if job.from_run:
            find_row(session.workspace, job.from_run, session.data.name)  # a bad --from fails before training
        ref = ref or reference(session)
        log(f"{job.compressor}: the control first (same model, data and epochs, no teacher)")
        _, control = run_compressor(session, Job(job.compressor, control_cfg, job.finetune, job.from_run), ref)
        rows.append(control)
        control_id = control.row_id
    base_row, row = run_compressor(session, job, ref, control_row_id=control_id)
    return [base_row, *rows, row]
