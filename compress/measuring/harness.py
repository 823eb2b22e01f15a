"""The one harness: a model in, one measured row out, the same steps for every model.

Counting (params, MACs) is theory, read off the fp32 structure. Timing and scoring are
measurement, and come from what is deployed alone (the `Artifact`): an int8 row is timed and
scored by its int8 session, never by the fp32 model it was made from. Each registered runtime
times the model in turn (`measuring/runtimes/`); the harness knows none of them by name.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from compress.errors import CompressError
from compress.log import log
from compress.measuring import counting, cpuload, memory, runtimes
from compress.measuring.environment import environment
from compress.measuring.subject import Measurement, RowInfo, Subject
from compress.measuring.timing import default_threads, pinning
from compress.scaleout import dist
from compress.store.atomic import scratch_dir
from compress.store.rows import ResultRow, config_hash, encode, new_row_id, now_iso


@dataclass(frozen=True)
class Counts:
    params: int
    nonzero: int
    macs: int
    conv_macs: int | None


def count(subject: Subject) -> Counts:
    """Theory: parameters and multiply-accumulates of the fp32 structure."""
    model = subject.fp32.cpu().eval()
    params, nonzero = counting.count_params(model)
    return Counts(params, nonzero, counting.count_macs(model, subject.shape),
                  counting.count_conv_macs(model, subject.shape))


def time_all(m: Measurement, phases: dict[str, float]) -> None:
    """Every registered runtime in turn (those in --runtimes, and those that record why they have no figure);
    `phases` gets the seconds each step took (the export and its check, then each runtime)."""
    with _timed(phases, "ONNX export + check"):
        m.onnx()  # exported once, before any runtime reads it; an int8 row's fp32 ONNX size is recorded here too
    for rt in runtimes.in_order():
        if rt.always or m.cfg.on(rt.key):
            before = cpuload.read_counters()  # each runtime's own window: load meanwhile flags that runtime alone
            with _timed(phases, rt.key):
                rt.time(m)
            during = cpuload.between(before, cpuload.read_counters())
            if during is not None and rt.key in m.timings.latency:
                m.timings.loads[rt.key] = during
                if during.busy:
                    log(f"warning: {rt.name} timed while the machine was busy: {during.note()}")


def probe_memory(m: Measurement) -> None:
    """Peak memory per runtime that was timed, each in a child process of its own (measuring/memory.py)."""
    if not m.cfg.memory:
        return
    jobs = {rt.key: job for rt in runtimes.in_order()
            if rt.memory is not None and rt.key in m.timings.latency and (job := rt.memory(m)) is not None}
    if not jobs:
        return
    log(f"measuring the peak memory of {m.subject.label} ({', '.join(runtimes.label(k) for k in jobs)}), each in a "
        "process of its own")
    for key, (peaks, note) in memory.measure(jobs).items():
        m.timings.memory_notes[key] = note
        if peaks:
            m.timings.memory[key] = peaks


def score(m: Measurement) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true labels over the whole test split, from the deployed artifact itself."""
    for rt in runtimes.in_order():
        if rt.score is not None and rt.scores is not None and rt.scores(m.subject.artifact):
            return rt.score(m)
    raise CompressError(f"no registered runtime can score {m.subject.artifact.backend}")


def measure_row(m: Measurement, info: RowInfo, row_id: str | None = None) -> tuple[ResultRow, np.ndarray | None]:
    """Every model goes through exactly this: count, time (each runtime; interleaved with `m.pair` for the
    speed-ups), watch the machine's load while timing, score, record the environment."""
    counts = count(m.subject)
    if m.cfg.require_quiet:
        cpuload.wait_until_quiet(m.cfg.quiet_timeout_s)
    before = cpuload.read_counters()
    preds = true = None
    phases: dict[str, float] = {}
    with scratch_dir(m.temp_root, "onnx") as tmp:
        m.scratch = Path(tmp)
        time_all(m, phases)
        during = cpuload.between(before, cpuload.read_counters())
        with _timed(phases, "peak memory"):
            probe_memory(m)  # after the timing windows: its children's CPU time is no runtime's load
        if m.test_loader is not None:
            with _timed(phases, "scoring"):
                preds, true = score(m)
    log(f"measured {m.subject.label} in {sum(phases.values()):.0f} s ("
        + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items()) + ")")
    correct = None if preds is None else preds == true
    return _row(m, info, counts, correct, row_id, during), preds


@contextmanager
def _timed(phases: dict[str, float], name: str) -> Iterator[None]:
    """How long one measuring phase took, for the progress line: where a model's measuring time goes."""
    start = time.perf_counter()
    try:
        yield
    finally:
        phases[name] = phases.get(name, 0.0) + time.perf_counter() - start


def _row(m: Measurement, info: RowInfo, counts: Counts, correct: np.ndarray | None, row_id: str | None,
         during: cpuload.Load | None) -> ResultRow:
    art, timings, subject = m.subject.artifact, m.timings, m.subject
    return ResultRow(
        row_id=row_id or new_row_id(info.compressor, info.config), created=now_iso(), dataset=info.dataset,
        compressor=info.compressor, config=info.config, config_hash=config_hash(info.config),
        baseline_row_id=info.baseline_row_id, model_path=str(art.file), num_classes=subject.spec.num_classes,
        image_size=subject.image_size, params=counts.params, nonzero_params=counts.nonzero, macs=counts.macs,
        size_bytes=counting.file_size(art.file), latency=timings.latency, latency_notes=timings.notes,
        accuracy=None if correct is None else float(correct.mean()),
        accuracy_before_finetune=info.accuracy_before_finetune,
        test_images=0 if correct is None else len(correct), finetune_epochs=info.finetune_epochs,
        best_epoch=info.best_epoch, train_seconds=info.train_seconds, seed=info.seed,
        env={**environment(m.cfg.threads or default_threads(), art.dtype), **pinning(m.cfg.threads)},
        command=info.command, paired=timings.paired,
        load=None if during is None else {**asdict(during), "busy": during.busy, "runtimes": {
            key: {**asdict(window), "busy": window.busy} for key, window in timings.loads.items()}},
        distributed=info.distributed or dist.current().record(None),
        onnx_size_bytes=timings.onnx_size, onnx_parity=timings.parity, backend=art.backend,
        source_row_id=info.source_row_id, control_row_id=info.control_row_id, conv_macs=counts.conv_macs,
        correct=None if correct is None else encode(correct), caveats=list(info.caveats),
        memory=timings.memory, memory_notes=timings.memory_notes, fp32_layers=info.facts.get("fp32_layers"),
        int8_budget={k: v for k, v in info.facts.items() if k != "fp32_layers"} or None)
