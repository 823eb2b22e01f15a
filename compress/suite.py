"""`run all`: every compressor at its defaults, the pruning sweep, and the controls, against one baseline.

The plan is a list of steps with a rough cost each (in baseline-epoch units), so the progress
bar's time-left estimate weighs a 6-epoch fine-tune of VGG16 above a 12-epoch tiny student.
The report is rewritten after every step: an interrupted run still leaves a usable report.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from compress import compressors, measure, pipeline
from compress.atomic import write_json
from compress.data import DataConfig
from compress.results import ResultRow
from compress.train import TrainConfig

SWEEP_AMOUNTS = (0.3, 0.5, 0.7)


@dataclass(frozen=True)
class Step:
    label: str
    compressor: str
    config: Any
    cost: float  # rough cost in baseline epochs, for the time-left estimate only
    source_of: str | None = None  # quantize the model this earlier step produced (--from)


def plan(amounts: tuple[float, ...] = SWEEP_AMOUNTS, epochs: int | None = None) -> list[Step]:
    """Every registered compressor at its defaults, plus the sweep, prune-then-int8, and a second student."""
    get = compressors.get

    def ep(name: str) -> int:
        return epochs if epochs is not None else get(name).finetune_epochs

    steps = [Step("slim-head", "slim-head", get("slim-head").config(), 0.8 * ep("slim-head") + 1)]
    pruning_cfg = get("pruning").config
    for importance in ("l1", "random"):
        for a in amounts:
            steps.append(Step(f"pruning {a} {importance}", "pruning", pruning_cfg(amount=a, importance=importance),
                              (1 - a) ** 2 * ep("pruning") + 1))
    quant = get("quantization").config
    steps.append(Step("quantization (int8, ONNX Runtime)", "quantization", quant(), 3))
    default_prune = next((s for s in steps if s.config == pruning_cfg()), None)
    if default_prune is not None:
        steps.append(Step(f"{default_prune.label} then int8", "quantization", quant(), 2,
                          source_of=default_prune.label))
    steps.append(Step("depthwise + KD (control: from scratch)", "depthwise", get("depthwise").config(distill=True),
                      2 * 0.4 * ep("depthwise") + 2))
    dist = get("distillation").config
    steps.append(Step("distillation vgg11 (+ control)", "distillation", dist(), 2 * 0.1 * ep("distillation") + 1))
    steps.append(Step("distillation seed-student (+ control)", "distillation", dist(student="seed-student"),
                      2 * 0.05 * ep("distillation") + 1))
    return steps


def run_all(ws: pipeline.Workspace, data_cfg: DataConfig, arch: str, baseline_cfg: TrainConfig,
            lat_cfg: measure.LatencyConfig, device: Any, command: str, epochs: int | None,
            amounts: tuple[float, ...], on_step: Callable[[list[ResultRow]], None], keep_onnx: bool = False,
            resume: bool = False) -> tuple[list[ResultRow], float]:
    """Run the plan; returns every row written and the wall-clock seconds the whole run took."""
    start = time.perf_counter()
    steps = plan(amounts, epochs)
    cached = (ws.baseline_dir(data_cfg, arch) / "meta.json").exists()
    total = sum(s.cost for s in steps) + (0 if cached else baseline_cfg.epochs) + 1
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
        pipeline.log(f"run all: {100 * done / total:.0f}% done, {elapsed / 60:.1f} min elapsed, about "
                     f"{left / 60:.0f} min left; next: {next_label}")

    with tqdm(total=round(total, 1), desc="run all", unit="epoch-eq", dynamic_ncols=True, disable=None,
              bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed} elapsed, ~{remaining} left") as bar:
        bar.set_description("run all: baseline")
        base = pipeline.ensure_baseline(ws, data_cfg, arch, baseline_cfg, device, resume=resume)
        n_train = len(base.split.train)
        steps = [replace(s, config=replace(s.config, calibration_size=n_train))  # small data: calibrate on all
                 if hasattr(s.config, "calibration_size") and s.config.calibration_size > n_train else s
                 for s in steps]
        base_row = pipeline.measure_baseline(ws, base, lat_cfg, device, command, keep_onnx)
        rows.append(base_row)
        on_step(rows)
        progress(bar, (0 if cached else baseline_cfg.epochs) + 1, steps[0].label)
        for i, step in enumerate(steps, 1):
            bar.set_description(f"run all [{i}/{len(steps)}] {step.label}")
            comp = compressors.get(step.compressor)
            ft = pipeline.FinetuneConfig(**({"lr": comp.finetune_lr} if comp.finetune_lr else {}))
            ft = replace(ft, epochs=(epochs if epochs is not None else comp.finetune_epochs) if comp.finetune else 0)
            source = produced[step.source_of].row_id if step.source_of else None
            new = pipeline.run_with_control(ws, step.compressor, step.config, data_cfg, arch, baseline_cfg, ft,
                                            lat_cfg, device, command, base=base, base_row=base_row,
                                            source=source, keep_onnx=keep_onnx, resume=resume)[1:]
            rows += new
            produced[step.label] = new[-1]
            on_step(rows)
            progress(bar, step.cost, steps[i].label if i < len(steps) else "the report")
    return rows, time.perf_counter() - start


def record(ws: pipeline.Workspace, dataset: str, seconds: float, command: str, rows: list[ResultRow],
           lat_cfg: measure.LatencyConfig) -> Path:
    """What the report says about the last complete `run all`: its wall time and its rows."""
    path = ws.root / dataset / "run_all.json"
    write_json(path, {"seconds": seconds, "command": command, "rows": [r.row_id for r in rows],
                      "finished": rows[-1].created if rows else None, "latency": asdict(lat_cfg),
                      "env": rows[-1].env if rows else {}})
    return path


def last_record(root: Path, dataset: str) -> dict[str, Any] | None:
    path = root / dataset / "run_all.json"
    return json.loads(path.read_text()) if path.exists() else None
