"""Plans of many runs: `run all` (built from the registry), `sweep` grids, and `run all --dry-run`.

Each registered compressor declares its own `run all` steps; this module only orders them,
adds the compositions, and runs them against one baseline. The report is rewritten after
every step: an interrupted run still leaves a usable report.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, get_origin, get_type_hints

from tqdm import tqdm

from compress import compressors
from compress.compressors import Compressor, PlanOptions
from compress.errors import CompressError
from compress.experiments.baseline import baseline_dir, reference
from compress.experiments.pipeline import Job, run_with_control
from compress.log import log
from compress.scaleout import dist
from compress.scaleout.shards import Shard
from compress.session import Session
from compress.store.atomic import write_json
from compress.store.rows import ResultRow
from compress.training import kd
from compress.training.config import FinetuneConfig

SWEEP_AMOUNTS = PlanOptions().amounts


# Compositions `run all` adds: (first, then, label) = compress the first compressor's default result
# with the second (prune, then int8 that model: the smallest file of the seed-004 methods together).
COMPOSITIONS = (("pruning", "quantization", "int8"),)


@dataclass(frozen=True)
class Step:
    label: str
    compressor: str
    config: Any
    finetune: FinetuneConfig
    cost: float  # rough cost in baseline epochs, for the time-left estimate only
    source_of: str | None = None  # compress the model this earlier step produced (--from)


def plan(options: PlanOptions = PlanOptions(), epochs: int | None = None) -> list[Step]:
    """Every registered compressor's declared steps, in plan order, plus the compositions."""
    steps: list[Step] = []
    for comp in compressors.in_plan_order():
        ft = comp.finetune_config(epochs=epochs)
        for p in comp.planned(options):
            runs = 2 if kd.control_of(p.config) is not None else 1  # the control trains the same model again
            steps.append(Step(p.label, comp.name, p.config, ft, runs * p.model_cost * ft.epochs + p.fixed))
        for first, then, label in COMPOSITIONS:
            if then == comp.name and first in compressors.names():
                default = compressors.get(first).config()
                src = next((s for s in steps if s.compressor == first and s.config == default), None)
                if src is not None:
                    steps.append(Step(f"{src.label} then {label}", then, comp.config(), ft, 2, src.label))
    return steps


def run_all(session: Session, options: PlanOptions, epochs: int | None,
            on_step: Callable[[list[ResultRow]], None]) -> tuple[list[ResultRow], float]:
    """Run the plan; returns every row written and the wall-clock seconds the whole run took."""
    start = time.perf_counter()
    steps = plan(options, epochs)
    trains = not session.baseline.imported and not (baseline_dir(session) / "meta.json").exists()
    baseline_cost = (session.baseline_train.epochs if trains else 0) + 1
    total = sum(s.cost for s in steps) + baseline_cost
    rows: list[ResultRow] = []
    produced: dict[str, ResultRow] = {}
    done = 0.0

    def progress(bar: tqdm, cost: float, next_label: str) -> None:
        """Advance the bar (on a terminal) and log one line with the time left (always)."""
        nonlocal done
        done += cost
        bar.update(cost)
        elapsed = time.perf_counter() - start
        left = elapsed * (total - done) / done if done else float("nan")
        log(f"run all: {100 * done / total:.0f}% done, {elapsed / 60:.1f} min elapsed, about "
            f"{left / 60:.0f} min left; next: {next_label}")

    with tqdm(total=round(total, 1), desc="run all", unit="epoch-eq", dynamic_ncols=True,
              disable=None if dist.current().main else True,
              bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed} elapsed, ~{remaining} left") as bar:
        bar.set_description("run all: baseline")
        ref = reference(session)
        n_train = len(ref.baseline.split.train)
        rows.append(ref.row)
        on_step(rows)
        progress(bar, baseline_cost, steps[0].label if steps else "the report")
        for i, step in enumerate(steps, 1):
            bar.set_description(f"run all [{i}/{len(steps)}] {step.label}")
            config = compressors.get(step.compressor).fit_to_data(step.config, n_train)
            source = produced[step.source_of].row_id if step.source_of else None
            new = run_with_control(session, Job(step.compressor, config, step.finetune, source), ref)[1:]
            rows += new
            produced[step.label] = new[-1]
            on_step(rows)
            progress(bar, step.cost, steps[i].label if i < len(steps) else "the report")
    return rows, time.perf_counter() - start


def record(session: Session, dataset: str, seconds: float, rows: list[ResultRow]) -> Path:
    """What the report says about the last complete `run all`: its wall time and its rows."""
    path = session.workspace.run_all_record(dataset)
    write_json(path, {"seconds": seconds, "command": session.command, "rows": [r.row_id for r in rows],
                      "finished": rows[-1].created if rows else None, "latency": asdict(session.latency),
                      "env": rows[-1].env if rows else {}})
    return path


def last_record(path: Path) -> dict[str, Any] | None:
    """The stored record of the last `run all` (Workspace.run_all_record), or None."""
    return json.loads(path.read_text()) if path.exists() else None


def grid_fields(comp: Compressor) -> list[str]:
    """Options a sweep can take several values of: every option but switches and fixed lists (--hidden)."""
    hints = get_type_hints(comp.config)
    return [f.name for f in fields(comp.config) if f.init and hints[f.name] is not bool
            and get_origin(hints[f.name]) is not tuple and not _is_tuple_optional(hints[f.name])]


def _is_tuple_optional(t: Any) -> bool:
    return any(get_origin(a) is tuple for a in getattr(t, "__args__", ()) or ())


def grid(comp: Compressor, chosen: dict[str, Any]) -> list[Any]:
    """One config per point of the product of the swept values (validated up front, before any work)."""
    swept = grid_fields(comp)
    fixed = {k: v for k, v in chosen.items() if k not in swept}
    return [comp.config(**fixed, **dict(zip(swept, values)))
            for values in itertools.product(*(chosen[n] for n in swept))]


def sweep(session: Session, name: str, points: list[Any], finetune: FinetuneConfig,
          from_run: str | None = None, shard: Shard = Shard()) -> list[ResultRow]:
    """This shard's points (all of them by default) against one baseline measured once;
    returns [baseline row, *point rows]."""
    swept = grid_fields(compressors.get(name))
    mine = shard.take(points)
    if not mine:
        raise CompressError(f"--shard {shard.index}/{shard.count} has no point: the grid has {len(points)} "
                            f"point(s), so use at most {len(points)} shards")
    ref = reference(session)
    rows = [ref.row]
    part = f" (shard {shard.index}/{shard.count})" if shard.count > 1 else ""
    for i, cfg in mine:
        log(f"[point {i}/{len(points)}{part}] {name}: " + ", ".join(f"{n}={getattr(cfg, n)}" for n in swept))
        rows += run_with_control(session, Job(name, cfg, finetune, from_run), ref)[1:]
    return rows


def describe(session: Session, options: PlanOptions, epochs: int | None) -> dict[str, Any]:
    """The plan as data, with training times from the store where this data has a matching row."""
    stored = session.store.rows(session.data.name)
    meta_path = baseline_dir(session) / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
    train = (meta or {}).get("train") or {}
    baseline = {"cached": meta is not None, "imported": str(session.baseline.weights or "") or None,
                "epochs": 0 if session.baseline.imported else train.get("epochs", session.baseline_train.epochs),
                "train_seconds": (meta or {}).get("train_seconds")}
    steps = []
    for step in plan(options, epochs):
        control = kd.control_of(step.config)
        trains = f"{step.finetune.epochs} epochs" + (" (twice: with the teacher and its control)" if control else "")
        seconds = [_stored_seconds(stored, step, cfg) for cfg in ([control] if control else []) + [step.config]]
        steps.append({"label": step.label, "compressor": step.compressor,
                      "trains": trains if step.finetune.epochs else "no training",
                      "from": step.source_of, "stored_train_seconds": None if None in seconds else sum(seconds)})
    last = last_record(session.workspace.run_all_record(session.data.name))
    return {"dataset": session.data.name, "image_size": session.data.size, "arch": session.arch,
            "baseline": baseline, "steps": steps, "last_run_all_seconds": last["seconds"] if last else None}


def _stored_seconds(rows: list[ResultRow], step: Step, config: Any) -> float | None:
    want = json.loads(json.dumps(asdict(config), default=str))
    hits = [r for r in rows if r.compressor == step.compressor and (r.config.get("compressor") or {}) == want
            and bool(r.config.get("source")) == bool(step.source_of)]
    return hits[-1].train_seconds if hits else None


def dry_run_lines(plan_info: dict[str, Any]) -> list[str]:
    b = plan_info["baseline"]
    if b["imported"]:
        state = f"your checkpoint {b['imported']}, no training"
    elif b["cached"]:
        state = f"cached ({b['epochs']} epochs, trained in {b['train_seconds']:.0f} s)"
    else:
        state = f"not cached: trains {b['epochs']} epochs first"
    lines = [f"run all on {plan_info['dataset']} ({plan_info['image_size']}px), baseline {plan_info['arch']}: {state}"]
    known = 0.0 if b["cached"] or b["imported"] else None
    for i, s in enumerate(plan_info["steps"], 1):
        sec = s["stored_train_seconds"]
        history = f"{sec:.0f} s of training last time" if sec is not None else "no stored run of this step"
        source = f", from the model of '{s['from']}'" if s["from"] else ""
        lines.append(f"  [{i:>2}] {s['label']}: {s['compressor']}{source}, {s['trains']}; {history}")
        known = None if known is None or sec is None else known + sec
    if known is not None:
        lines.append(f"training time of these steps in the stored history: {known / 60:.1f} min "
                     "(measuring each model adds to it)")
    if plan_info["last_run_all_seconds"]:
        lines.append(f"the last complete run all on this data took {plan_info['last_run_all_seconds'] / 60:.1f} min")
    elif known is None:
        lines.append("no estimate: some steps (or the baseline) have no stored history on this data")
    return lines
