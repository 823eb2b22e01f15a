"""`compress search`: the fastest (or smallest) model within N points, across methods and their compositions.

Optuna's TPE sampler proposes a candidate (a compressor, its main knob, and whether int8 follows);
cheap checks come first and stop most candidates before any training:

1. theory: a candidate whose MACs (parameters, for --objective size) are no lower than those of the
   best model already within the drop, with the same int8 step, is not trained: it cannot win.

There is no accuracy skip before fine-tuning: it could not prove a candidate infeasible. On digits
pruning 0.5 reads 10.03% (chance) before fine-tuning and 93.04% after (reports/digits.md), so an
"at chance, skip it" rule threw away candidates that were feasible. The untuned validation accuracy
of a pruning candidate is still recorded (the report shows it, and a search whose budget ends
before any fine-tuning reports its best untuned candidate, marked so).

The rest are fine-tuned with the same budget (`--epochs`), measured by the one harness and stored
as rows like any `run`; int8 follows as `run quantization --from` that row. Feasibility is judged
on the validation split (never the test split); the winner's test accuracy and McNemar p against
the baseline are reported afterwards, beside the Pareto front of everything that was measured.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from compress import compressors
from compress.compressors import Context
from compress.errors import CompressError
from compress.experiments import pipeline
from compress.experiments.baseline import EVAL_BATCH, Reference, reference
from compress.log import log
from compress.measuring.counting import count_macs, count_params
from compress.measuring.runtimes import onnx_runtime
from compress.measuring.runtimes.onnx_runtime import ORT_CPU
from compress.models import checkpoints
from compress.session import Session
from compress.store.atomic import write_json
from compress.store.rows import ResultRow
from compress.store.searches import LATENCY, OBJECTIVES, RENAMED, Objective, Outcome, Tried
from compress.training.config import FinetuneConfig
from compress.training.evaluation import accuracy


@dataclass(frozen=True)
class SearchConfig:
    max_drop: float = field(default=1.0, metadata={"parse": "points", "help": (
        "points of validation accuracy the model may lose against the baseline; a candidate followed by int8 gets "
        "what is left of it as its int8 step's --max-drop (layers back to fp32 until the whole chain is within it)")})
    objective: Objective = field(default="ort-b32", metadata={
        "renamed": RENAMED, "help": "what to minimise: ONNX Runtime or PyTorch latency at batch 32, bytes on disk, or MACs"})
    budget_min: float = field(default=30.0, metadata={
        "parse": "positive", "help": "wall-clock minutes for the whole search, baseline timing included"})
    epochs: int = field(default=2, metadata={
        "help": "fine-tuning epochs of every trained candidate, one budget for all"})
    trials: int = field(default=40, metadata={
        "help": "at most this many candidates (the time budget usually ends it first)"})
    seed: int = field(default=0, metadata={"flag": "--search-seed", "help": "seed of the sampler"})

    def __post_init__(self) -> None:
        if self.objective in RENAMED:
            log(f"note: --objective {self.objective} is now spelled {RENAMED[self.objective]} (one name per runtime)")
            object.__setattr__(self, "objective", RENAMED[self.objective])  # frozen: set once, while built
        if self.objective not in OBJECTIVES:
            raise CompressError(f"--objective {self.objective!r} is not one of {', '.join(OBJECTIVES)}")
        if not (math.isfinite(self.max_drop) and self.max_drop >= 0):
            raise CompressError(f"--max-drop must be a number of points >= 0, got {self.max_drop}")
        if not (math.isfinite(self.budget_min) and self.budget_min > 0):
            raise CompressError(f"--budget-min must be a positive number of minutes, got {self.budget_min}")
        if self.epochs < 1 or self.trials < 1:
            raise CompressError(f"--epochs and --trials must be >= 1, got {self.epochs} and {self.trials}")


def _space(trial: Any, objective: str, has_scan: bool) -> tuple[str, dict[str, Any], bool]:
    """The candidate Optuna proposes: a compressor, its main knob, and (where it can help) int8 after it."""
    method = trial.suggest_categorical("method", ["pruning", "slim-head", "distillation", "depthwise"])
    settings: dict[str, Any] = {}
    if method == "pruning":
        settings["amount"] = round(trial.suggest_float("amount", 0.3, 0.8, step=0.1), 2)  # 0.6, not 0.6000000000000001
        if has_scan and trial.suggest_categorical("per_layer", [False, True]):
            settings["per_layer"] = "sensitivity"
    elif method == "slim-head":
        settings["head"] = trial.suggest_categorical("head", ["mlp", "gap"])
    elif method == "distillation":
        settings.update(student="vgg11", kd=True, width=trial.suggest_categorical("width", [0.25, 0.5]))
    int8 = objective in ("ort-b32", "size") and trial.suggest_categorical("int8", [False, True])
    return method, settings, bool(int8)


class Search:
    """One search: the session, the baseline measured once, and everything tried."""

    def __init__(self, session: Session, cfg: SearchConfig) -> None:
        self.session, self.cfg = session, cfg
        self.start = time.perf_counter()  # the budget covers the baseline's timing too
        if cfg.objective in LATENCY and 32 not in session.latency.batches:
            raise CompressError(f"--objective {cfg.objective} reads batch 32: keep 32 in --latency-batches")
        if cfg.objective == "ort-b32" and not session.latency.on(ORT_CPU):
            raise CompressError("--objective ort-b32 needs ONNX Runtime timing: keep ort in --runtimes")
        self.ref: Reference = reference(session)
        self.ld = self.ref.baseline.loaders(EVAL_BATCH)
        self.base_val = accuracy(self.ref.baseline.model, self.ld.val, session.device)
        self.ref.baseline.model.cpu()
        self.base_macs = self.ref.row.macs
        self.tried: list[Tried] = []
        trained = self.ref.baseline.meta.get("train") or {}  # None for your own checkpoint: nothing was timed
        # a baseline epoch: what one fine-tuning epoch of an unpruned model costs (60 s when it is not known)
        self.epoch_s = (self.ref.row.train_seconds or 60.0) / max(1, int(trained.get("epochs", 1)))

    # -- stages --------------------------------------------------------------------------------------
    def left_s(self) -> float:
        return self.cfg.budget_min * 60 - (time.perf_counter() - self.start)

    def _build(self, method: str, settings: dict[str, Any]) -> tuple[Any, Any]:
        comp = compressors.get(method)
        config = comp.config(**settings)
        if comp.resolve is not None:
            config = comp.resolved(config, pipeline.stored_for(self.session, self.ref, pipeline.Start(
                self.ref.baseline.model, self.ref.baseline.spec)))
        ctx = Context(loaders=self.ld, device=self.session.device, num_classes=self.ref.row.num_classes,
                      image_size=self.session.data.size, run_dir=Path("unused"))
        model, _ = comp.fn(copy.deepcopy(self.ref.baseline.model), self.ref.baseline.spec, config, ctx)
        return config, model

    def best(self) -> Tried | None:
        ok = [t for t in self.tried if t.feasible(self.base_val, self.cfg.max_drop) and t.value is not None]
        return min(ok, key=lambda t: t.value) if ok else None  # type: ignore[arg-type,return-value]

    def _val_of(self, row: ResultRow) -> float:
        """Validation accuracy of a stored row's model, run as it is deployed (int8 by ONNX Runtime)."""
        path = Path(row.model_path)
        if path.suffix == ".onnx":
            preds, true = onnx_runtime.predict(path, self.ld.val, self.session.latency.threads)
            return float((preds == true).mean())
        model = checkpoints.load_model(path, num_classes=row.num_classes).model
        return accuracy(model, self.ld.val, self.session.device)

    def trial(self, number: int, method: str, settings: dict[str, Any], int8: bool) -> Tried:
        try:
            config, model = self._build(method, settings)
        except CompressError as exc:  # e.g. guided amounts that cannot reach the target: this candidate only
            return Tried(number, method, settings, int8, "failed", 0, note=str(exc))
        macs = count_macs(model, (3, self.session.data.size, self.session.data.size))
        t = Tried(number, method, settings, int8, "theory", macs)
        t.params = count_params(model)[0]
        best, by = self.best(), ("params" if self.cfg.objective == "size" else "macs")
        if best is not None and best.int8 == int8 and getattr(t, by) >= getattr(best, by):
            unit = "MACs" if by == "macs" else "parameters"
            t.note = f"{getattr(t, by) / 1e6:.1f} M {unit}, no fewer than the best so far ({getattr(best, by) / 1e6:.1f} M)"
            return t
        if method == "pruning":  # recorded, not a verdict: a pruned model at chance can recover (docstring)
            t.untuned_val = accuracy(model, self.ld.val, self.session.device)
        del model
        cost = self.epoch_s * self.cfg.epochs * max(0.1, macs / self.base_macs) + 60
        if cost > self.left_s():
            t.stage, t.note = "untuned", f"not trained: about {cost / 60:.1f} min needed, {self.left_s() / 60:.1f} left"
            return t
        comp = compressors.get(method)
        job = pipeline.Job(method, config, comp.finetune_config(epochs=self.cfg.epochs))
        try:
            _, row = pipeline.run_compressor(self.session, job, self.ref)
            chain = [row]
            t.stage, t.row_id = "trained", row.row_id
            if int8:  # budgeted int8: what the fp32 candidate left of --max-drop against the baseline
                from compress.compressors.quantization import QuantizationConfig

                fp32_val = self._val_of(row)  # scored once: the budget's start, and the result if it is spent
                left = self.cfg.max_drop - 100 * (self.base_val - fp32_val)
                if left < 0:
                    t.note = f"its fp32 model is already {-left:.2f} points past --max-drop: no int8 step"
                    t.val_accuracy, t.value = fp32_val, ranked_value(chain, self.ref.row, self.cfg.objective)
                    return t
                quant = pipeline.Job("quantization", QuantizationConfig(max_drop=round(left, 4)),
                                     FinetuneConfig(epochs=0), row.row_id)
                _, row = pipeline.run_compressor(self.session, quant, self.ref)
                chain.append(row)
                t.source_row_id, t.row_id = t.row_id, row.row_id
        except CompressError as exc:
            t.stage, t.note = "failed", str(exc)
            return t
        t.val_accuracy, t.value = self._val_of(row), ranked_value(chain, self.ref.row, self.cfg.objective)
        return t


def run(session: Session, cfg: SearchConfig, command: str) -> Outcome:
    """Propose, check cheaply, train the promising, until the budget or --trials is spent."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search = Search(session, cfg)
    has_scan = _has_scan(search)
    sampler = optuna.samplers.TPESampler(seed=cfg.seed)  # feasibility: trial.set_constraint (<= 0 is feasible)
    study = optuna.create_study(direction="minimize", sampler=sampler)

    seen: dict[str, Tried] = {}  # TPE proposes the same categorical candidate again: answer it from memory

    def objective(trial: Any) -> float:
        method, settings, int8 = _space(trial, cfg.objective, has_scan)
        key = f"{method} {sorted(settings.items())} {int8}"
        if key in seen and seen[key].value is not None:
            t = seen[key]
            trial.set_constraint("validation drop over --max-drop",
                                 100 * (search.base_val - (t.val_accuracy or 0)) - cfg.max_drop)
            return t.value  # type: ignore[return-value]
        log(f"[search {trial.number + 1}, {search.left_s() / 60:.1f} min left] {method} "
            + " ".join(f"{k}={v}" for k, v in settings.items()) + (" then int8" if int8 else ""))
        t = search.trial(trial.number, method, settings, int8)
        search.tried.append(t)
        seen[key] = t
        if t.note:
            log(f"  {t.stage}: {t.note}")
        if t.value is None:
            trial.set_constraint("validation drop over --max-drop", 1.0)
            raise optuna.TrialPruned()
        drop = 100 * (search.base_val - (t.val_accuracy or 0))
        log(f"  val top-1 {100 * (t.val_accuracy or 0):.2f}% ({-drop:+.2f} pts), {cfg.objective} {t.value:.4g}")
        trial.set_constraint("validation drop over --max-drop", drop - cfg.max_drop)
        return t.value

    if search.epoch_s * cfg.epochs * 0.1 + 60 > search.left_s():  # not even the cheapest candidate can be trained
        log(f"search: {search.left_s() / 60:.1f} min left is too little to fine-tune one candidate; checking "
            "untuned pruning candidates only")
        for i, amount in enumerate((0.3, 0.5, 0.7)):
            search.tried.append(search.trial(i, "pruning", {"amount": amount}, False))
    else:
        study.optimize(objective, n_trials=cfg.trials, timeout=max(1.0, search.left_s()), catch=())
    best = search.best()
    outcome = Outcome(asdict(cfg), search.ref.row.row_id, search.base_val, objective_of(search.ref.row, cfg.objective),
                      search.tried, best, seconds=time.perf_counter() - search.start, command=command)
    if best is None:
        untuned = [t for t in search.tried if t.untuned_val is not None]
        within = [t for t in untuned if 100 * (search.base_val - (t.untuned_val or 0)) <= cfg.max_drop]
        if within or untuned:  # marked as untuned wherever it is reported
            outcome.best = min(within, key=lambda t: t.macs) if within else max(untuned, key=lambda t: t.untuned_val or 0)
            outcome.best_untuned = True
    return outcome


def _has_scan(search: Search) -> bool:
    from compress.sensitivity.scans import scan_path

    base = Path(search.ref.baseline.path)
    return scan_path(search.session.workspace.sensitivity_dir(search.session.data.name), base.parent.name,
                     "pruning").exists()


def save(session: Session, outcome: Outcome) -> Path:
    path = session.workspace.search_dir(session.data.name) / f"search-{time.strftime('%Y%m%d-%H%M%S')}.json"
    write_json(path, outcome.to_dict())
    return path


def ranked_value(chain: list[ResultRow], baseline: ResultRow, objective: str) -> float | None:
    """What a candidate is ranked by: for latency, the baseline's own median divided by the candidate's speed-up
    over that one common baseline, each step a paired ratio (int8: against its fp32 source, times that source's
    against the baseline); so candidates are compared through ratios timed beside the same baseline, not through
    medians timed beside whatever each was paired with. Without a paired chain: the row's own median."""
    plain = objective_of(chain[-1], objective)
    if objective not in LATENCY:
        return plain
    runtime = LATENCY[objective]
    base = baseline.lat(runtime, 32)
    speedup, reference = 1.0, baseline.row_id
    for row in chain:  # each step paired with the one before it, the first with the baseline
        paired = row.pair(runtime, 32)
        if paired is None or paired.reference_row_id != reference or base is None:
            return plain
        speedup, reference = speedup * paired.ratio, row.row_id
    return base.median_ms / speedup


def objective_of(row: ResultRow, objective: str) -> float | None:
    """The figure the search minimises, read off a stored row (None: not measured on that runtime)."""
    if objective == "size":
        return float(row.size_bytes)
    if objective == "macs":
        return float(row.macs)
    lat = row.lat(LATENCY[RENAMED.get(objective, objective)], 32)
    return None if lat is None else lat.median_ms
