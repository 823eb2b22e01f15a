"""`python -m compress ...`: parse the flags, build one Session, dispatch to the layer below.

Flags come from the typed config dataclasses (`flags.py`), so a new compressor gets its
CLI by declaring its config. Logs go to stderr; `--json` prints result rows on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from compress import compressors
from compress.configs import settings_of
from compress.data import datasets
from compress.errors import CompressError
from compress.experiments import checkpoint, pipeline, plans, scanning, search
from compress.experiments.baseline import reference
from compress.faults import check_writable, one_line_errors, sigterm_as_interrupt
from compress.flags import Parser, add_config_flags, config_from, finite_float, list_of
from compress.log import log
from compress.measuring.timing import REPORT_BATCH, LatencyConfig
from compress.models import pretrained, vgg
from compress.reporting import markdown, scan_tables, search_report, terminal
from compress.scaleout import collect, dist, shards
from compress.sensitivity import scans
from compress.sensitivity.scans import AMOUNTS, ScanSettings
from compress.session import BaselineSource, Session, pick_device
from compress.store import searches
from compress.store.atomic import clean_stale
from compress.store.workspace import Workspace
from compress.training.config import FinetuneConfig, TrainConfig

STARTED = time.time()  # files older than this process and no longer written to are leftovers

# ---------------------------------------------------------------------------------------
# Parser: which flags each command has
# ---------------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print result rows as JSON on stdout")
    p.add_argument("--wide", action="store_true",
                   help="print the full markdown table (every column) instead of the compact one")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where runs, baselines and the results store live (default ./runs or $COMPRESS_HOME)")
    p.add_argument("--reports-dir", type=Path, default=Path("reports"), help="where reports are written")
    p.add_argument("--report-batch", type=int, default=REPORT_BATCH,
                   help=f"batch size whose latency the tables' speed-ups and the plots use (default {REPORT_BATCH})")


def _data_flags(p: argparse.ArgumentParser, **defaults: Any) -> None:
    add_config_flags(p.add_argument_group("data"), datasets.DataConfig, skip=("test_fraction", "val_fraction"),
                     defaults=defaults or None)


def _model_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("the baseline")
    g.add_argument("--arch", choices=list(vgg.ARCHS), default=None,
                   help="baseline architecture (default vgg16; with --baseline-weights, checked against the file)")
    g.add_argument("--baseline-weights", type=Path, default=None, metavar="PATH",
                   help="your trained checkpoint is the baseline (a state dict in torchvision's or seed 004's "
                        "layout, or a compress checkpoint): no baseline training")
    g.add_argument("--trust-pickle", action="store_true",
                   help="allow --baseline-weights to be a fully pickled model (unpickling runs code)")
    g.add_argument("--pretrained", nargs="?", const=pretrained.IMAGENET, default=None, metavar="PATH",
                   help="train the baseline from ImageNet weights as the seeds do: torchvision's file from the torch "
                        "hub cache ($TORCH_HOME), or PATH; --download lets it fetch the file")
    g.add_argument("--freeze-features", action="store_true",
                   help="with --pretrained: train the classifier only (seed 000)")
    p.add_argument("--device", default="auto", help="training device: auto, cpu or cuda (default auto)")


def _latency_flags(p: argparse.ArgumentParser) -> None:
    add_config_flags(p.add_argument_group("latency measurement"), LatencyConfig, prefix="latency-", dest_prefix="lat_")


def _run_flags(p: argparse.ArgumentParser, baseline_epochs: bool = True) -> None:
    """What every command that trains or reuses the baseline shares."""
    _common(p), _data_flags(p), _model_flags(p), _latency_flags(p)
    if baseline_epochs:
        p.add_argument("--baseline-epochs", type=int, default=TrainConfig.epochs,
                       help=f"epochs for the baseline if none is cached (default {TrainConfig.epochs})")
    p.add_argument("--export-onnx", action="store_true",
                   help="keep each measured model's ONNX export (model.onnx, parity-checked) in its run folder")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted training of the same configuration from its last epoch checkpoint")


def _compressor_parsers(parent: argparse.ArgumentParser, sweep: bool) -> Any:
    """One sub-command per registered compressor, its flags taken from its config dataclass."""
    subs = parent.add_subparsers(dest="compressor", required=True, parser_class=Parser, metavar="COMPRESSOR")
    for name in compressors.names():
        comp = compressors.get(name)
        q = subs.add_parser(name, help=comp.description, description=comp.description)
        _run_flags(q)
        add_config_flags(q.add_argument_group(f"{name} options"), comp.config, dest_prefix="c_", as_lists=sweep,
                         defaults=comp.sweep_defaults if sweep else None)
        if comp.finetune:
            title = "training after compression" + (" (the same budget for every point)" if sweep else "")
            add_config_flags(q.add_argument_group(title), FinetuneConfig,
                             defaults={f.name: getattr(comp.finetune_config(), f.name) for f in fields(FinetuneConfig)})
        q.add_argument("--from", dest="from_run", metavar="RUN", default=None,
                       help="start from a stored run (row id, id prefix or run folder) instead of the baseline, "
                            "e.g. quantize a pruned model; the source is re-measured beside the new row")
    return subs


def _run_all_parser(subs: Any) -> None:
    q = subs.add_parser("all", help="every compressor's planned steps + controls, then the report",
                        description="Every registered compressor's run-all steps (the pruning sweep with its random "
                                    "control, prune-then-int8, each distillation beside its control), all against "
                                    "one cached baseline; then the report.")
    _run_flags(q)
    q.add_argument("--epochs", type=int, default=None,
                   help="fine-tuning/training epochs for every step (default: each compressor's own budget)")
    q.add_argument("--amounts", type=list_of(float), default=plans.SWEEP_AMOUNTS,
                   help="pruning amounts to sweep (default " + ",".join(map(str, plans.SWEEP_AMOUNTS)) + ")")
    q.add_argument("--dry-run", action="store_true",
                   help="print the plan (steps, what each trains, stored training times) and run nothing")


def _tolerance(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 points of accuracy, got {text}")
    return value


def _positive(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _sensitivity_parser(sub: Any) -> None:
    p = sub.add_parser("sensitivity", help="per-layer sensitivity of the baseline to pruning or to int8 "
                                            "(validation split, no fine-tuning)")
    kinds = p.add_subparsers(dest="kind", required=True, parser_class=Parser, metavar="KIND")
    for kind, text in (("pruning", "each convolution alone loses its lowest-L1 filters at each amount (Li et al. "
                                   "2017, Figure 2); validation accuracy, no fine-tuning"),
                       ("quantization", "each layer's int8 output against fp32 (SQNR, ONNX Runtime's QDQ debugging "
                                        "API), and the validation accuracy with only that layer int8")):
        q = kinds.add_parser(kind, help=text, description=text)
        _common(q), _data_flags(q), _model_flags(q)
        q.add_argument("--baseline-epochs", type=int, default=TrainConfig.epochs,
                       help=f"epochs for the baseline if none is cached (default {TrainConfig.epochs})")
        q.add_argument("--tolerance", type=_tolerance, default=1.0,
                       help="points of validation accuracy a layer may lose and still count as insensitive (default 1)")
        if kind == "pruning":
            q.add_argument("--amounts", type=list_of(float), default=scans.AMOUNTS,
                           help="amounts to prune each layer by (default " + ",".join(map(str, scans.AMOUNTS))
                                + ")")
        else:
            q.add_argument("--calibration-size", type=int, default=320,
                           help="training images for int8 calibration, as `run quantization` (default 320)")


def _search_parser(sub: Any) -> None:
    text = ("the fastest (or smallest) model within --max-drop points of validation accuracy, across compressors, "
            "their main knobs and prune/slim-head -> int8 compositions (Optuna TPE), within --budget-min minutes")
    p = sub.add_parser("search", help=text, description=text)
    _run_flags(p)
    d = search.SearchConfig()
    p.add_argument("--max-drop", type=_tolerance, default=d.max_drop,
                   help=f"points of validation accuracy the model may lose (default {d.max_drop:g})")
    p.add_argument("--objective", choices=searches.OBJECTIVES, default=d.objective,
                   help="what to minimise: ONNX Runtime or PyTorch CPU latency at batch 32, bytes on disk, or MACs "
                        f"(default {d.objective})")
    p.add_argument("--budget-min", type=_positive, default=d.budget_min,
                   help=f"wall-clock minutes for the whole search, baseline timing included (default {d.budget_min:g})")
    p.add_argument("--epochs", type=int, default=d.epochs,
                   help=f"fine-tuning epochs of every trained candidate, one budget for all (default {d.epochs})")
    p.add_argument("--trials", type=int, default=d.trials, help=f"at most this many candidates (default {d.trials})")
    p.add_argument("--search-seed", type=int, default=d.seed, help="seed of the sampler (default 0)")


def _shard(text: str) -> shards.Shard:
    try:
        return shards.Shard.parse(text)
    except CompressError as exc:  # argparse reports it in its one line
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> Parser:
    parser = Parser(prog="compress", description="Compress a VGG16 classifier and measure what it buys you.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    _common(sub.add_parser("list", help="the registered compressors"))
    p = sub.add_parser("baseline", help="train (or load the cached) VGG16 baseline and measure it")
    _run_flags(p, baseline_epochs=False)
    add_config_flags(p.add_argument_group("training"), TrainConfig)
    p.add_argument("--retrain", action="store_true", help="train again even if a cached baseline exists")
    p = sub.add_parser("run", help="compress the baseline with one compressor (or `all`), fine-tune, measure")
    _run_all_parser(_compressor_parsers(p, sweep=False))
    sweeps = _compressor_parsers(sub.add_parser("sweep", help="run one compressor over a grid of settings "
                                                              "(comma-separated values)"), sweep=True)
    for q in sweeps.choices.values():
        q.add_argument("--shard", type=_shard, default=shards.Shard(), metavar="K/N",
                       help="run only the K-th of N interleaved parts of the grid (point i goes to shard "
                            "((i-1) mod N)+1), e.g. one Slurm array task each; merge with `compress collect`")
    _sensitivity_parser(sub)
    _search_parser(sub)
    p = sub.add_parser("measure", help="measure a checkpoint you already have")
    _common(p), _latency_flags(p)
    p.add_argument("--weights", type=Path, required=True, help="a state dict (.pth) or a compress checkpoint")
    p.add_argument("--arch", choices=list(vgg.ARCHS), default=None, help="expected architecture (checked)")
    p.add_argument("--num-classes", type=int, default=None, help="expected number of classes (checked)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow a fully pickled model (unpickling runs code: only for files you trust)")
    p.add_argument("--device", default="auto", help="device for the accuracy pass: auto, cpu or cuda")
    p.add_argument("--store", action="store_true",
                   help="also add the row to the results store (and so to `compress report`)")
    p.add_argument("--onnx-out", type=Path, default=None, metavar="PATH",
                   help="keep the parity-checked ONNX export of the checkpoint at PATH")
    _data_flags(p, dataset=None)
    p = sub.add_parser("collect", help="merge the rows of other workdirs (sweep shards) into this one's store",
                       description="Add every row of the given workdirs' stores to this workdir's store (--workdir), "
                                   "once: collecting twice adds nothing. Rows whose baseline differs from the one "
                                   "already collected for the same recipe are refused, with the reason.")
    _common(p)
    p.add_argument("sources", nargs="+", type=Path, metavar="DIR", help="workdirs to collect (each with results.sqlite)")
    p = sub.add_parser("report", help="regenerate reports/<dataset>.md from the stored rows")
    _common(p)
    p.add_argument("--dataset", default=None, help="only this dataset (default: every dataset in the store)")
    p.add_argument("--html", action="store_true",
                   help="also write reports/<dataset>.html: the same report in one self-contained file, plots inside")
    return parser


# ---------------------------------------------------------------------------------------
# From flags to one Session
# ---------------------------------------------------------------------------------------

def workspace(ns: argparse.Namespace) -> Workspace:
    return Workspace(ns.workdir) if ns.workdir else Workspace.default()


def _workdir_flag(ns: argparse.Namespace) -> str:
    """What set the workspace, for error messages: the flag, or the environment variable."""
    return "--workdir" if ns.workdir or not os.environ.get("COMPRESS_HOME") else "$COMPRESS_HOME"


def _prepare(ns: argparse.Namespace) -> None:
    """Before any work: output folders writable, the store readable, leftovers of killed runs cleaned."""
    if ns.command == "list" or getattr(ns, "dry_run", False):
        return
    ws = workspace(ns)
    targets = [(getattr(ns, "reports_dir", None), "--reports-dir")]
    if ns.command != "report":  # report only reads the workspace
        targets.append((ws.root, _workdir_flag(ns)))
    check_writable(targets)
    ws.store.check()
    if ns.command != "report" and dist.current().main:  # under torchrun rank 0 alone cleans (and writes)
        files, freed = clean_stale(ws.root, STARTED)
        if files:
            log(f"cleaned {files} leftover file(s) of interrupted runs under {ws.root} ({freed / 1e6:.1f} MB freed)")


def session_from(ns: argparse.Namespace, command: str) -> Session:
    """Every setting of this invocation, validated once before any work."""
    if getattr(ns, "baseline_epochs", 1) <= 0:
        raise CompressError(f"--baseline-epochs must be positive, got {ns.baseline_epochs}")
    if ns.report_batch < 1:
        raise CompressError(f"--report-batch must be a positive batch size, got {ns.report_batch}")
    if ns.command == "baseline":
        train = config_from(TrainConfig, ns)
        if train.epochs <= 0:
            raise CompressError(f"--epochs must be positive for the baseline, got {train.epochs}")
    else:  # the baseline's own recipe; --epochs etc. are the fine-tune's
        train = TrainConfig(epochs=getattr(ns, "baseline_epochs", TrainConfig.epochs))
    source = BaselineSource(weights=getattr(ns, "baseline_weights", None), trust_pickle=ns.trust_pickle,
                            arch=ns.arch, pretrained=getattr(ns, "pretrained", None),
                            download=bool(getattr(ns, "download", False)),
                            freeze_features=getattr(ns, "freeze_features", False))
    data_cfg = config_from(datasets.DataConfig, ns, dataset=ns.dataset or "digits")
    if source.pretrained is not None:  # ImageNet weights expect ImageNet's input statistics
        data_cfg = replace(data_cfg, normalization="imagenet")
    return Session(workspace=workspace(ns), data=data_cfg, baseline=source,
                   arch=ns.arch or "vgg16", baseline_train=train, latency=config_from(LatencyConfig, ns, "lat_"),
                   device=pick_device(ns.device), command=command, keep_onnx=getattr(ns, "export_onnx", False),
                   resume=getattr(ns, "resume", False), retrain=getattr(ns, "retrain", False),
                   report_batch=ns.report_batch)


# ---------------------------------------------------------------------------------------
# Commands: each one line of parsing, one call below, one output
# ---------------------------------------------------------------------------------------

def _emit(rows: list[Any], ns: argparse.Namespace, baselines: dict[str, Any] | None = None) -> None:
    if not dist.current().main:  # every rank holds the rows; one prints them
        return
    if ns.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2, default=str))
    elif ns.wide:
        print(markdown.to_markdown(rows, baselines or {}, ns.report_batch))
    else:
        known = {r.row_id: r for r in rows if r.compressor == "baseline"}
        terminal.show(rows, {**known, **(baselines or {})}, ns.report_batch)


def _beside(root: Path, dataset: str) -> markdown.Beside:
    """What the report shows besides the rows: the last complete `run all`, the stored scans, the newest search."""
    return markdown.Beside(plans.last_record(root, dataset), tuple(scans.stored(scans.folder(root, dataset))),
                           searches.newest(root, dataset))


def _refresh_report(session: Session, dataset: str, reports_dir: Path) -> None:
    if not dist.current().main:
        return
    rows = session.store.rows(dataset)
    path = markdown.write_report(dataset, rows, reports_dir, session.report_batch,
                                 _beside(session.workspace.root, dataset))
    log(f"report: {path}")


def cmd_list(ns: argparse.Namespace, command: str) -> None:
    items = [{"name": n, "description": compressors.get(n).description,
              "options": [f.name for f in settings_of(compressors.get(n).config)]} for n in compressors.names()]
    if ns.json:
        print(json.dumps(items, indent=2))
        return
    width = max(len(i["name"]) for i in items)
    for i in items:
        print(f"{i['name']:<{width}}  {i['description']}")


def cmd_baseline(ns: argparse.Namespace, command: str) -> None:
    session = session_from(ns, command)
    ref = reference(session)
    log(f"baseline test accuracy {100 * (ref.row.accuracy or 0):.2f}% ({ref.row.test_images} images); "
        f"checkpoint {ref.baseline.path}")
    _emit([ref.row], ns)
    _refresh_report(session, ref.row.dataset, ns.reports_dir)


def cmd_run_all(ns: argparse.Namespace, command: str) -> None:
    if ns.epochs is not None and ns.epochs < 0:
        raise CompressError(f"--epochs must be >= 0, got {ns.epochs}")
    for a in ns.amounts:
        compressors.get("pruning").config(amount=a)  # validates each amount before any work
    session, options = session_from(ns, command), compressors.PlanOptions(amounts=tuple(ns.amounts))
    if ns.dry_run:
        info = plans.describe(session, options, ns.epochs)
        print(json.dumps(info, indent=2) if ns.json else "\n".join(plans.dry_run_lines(info)))
        return
    rows, seconds = plans.run_all(session, options, ns.epochs,
                                  lambda rows: _refresh_report(session, rows[0].dataset, ns.reports_dir))
    if dist.current().main:
        plans.record(session, rows[0].dataset, seconds, rows)
    _refresh_report(session, rows[0].dataset, ns.reports_dir)
    log(f"run all: {len(rows)} rows in {seconds / 60:.1f} min")
    _emit(rows, ns, {rows[0].row_id: rows[0]})


def _finetune(ns: argparse.Namespace) -> FinetuneConfig:
    comp = compressors.get(ns.compressor)
    chosen = {f.name: getattr(ns, f.name) for f in fields(FinetuneConfig) if hasattr(ns, f.name)}
    return comp.finetune_config(**chosen)


def cmd_run(ns: argparse.Namespace, command: str) -> None:
    if ns.compressor == "all":
        return cmd_run_all(ns, command)
    job = pipeline.Job(ns.compressor, config_from(compressors.get(ns.compressor).config, ns, "c_"), _finetune(ns),
                       ns.from_run)
    session = session_from(ns, command)
    rows = pipeline.run_with_control(session, job)
    _emit(rows, ns, {rows[0].row_id: rows[0]})
    _refresh_report(session, rows[0].dataset, ns.reports_dir)


def cmd_sweep(ns: argparse.Namespace, command: str) -> None:
    comp = compressors.get(ns.compressor)
    chosen = {f.name: getattr(ns, "c_" + f.name) for f in settings_of(comp.config)}
    points, finetune = plans.grid(comp, chosen), _finetune(ns)  # every point validated before any work
    session = session_from(ns, command)
    rows = plans.sweep(session, ns.compressor, points, finetune, ns.from_run, ns.shard)
    _emit(rows, ns, {rows[0].row_id: rows[0]})
    _refresh_report(session, rows[0].dataset, ns.reports_dir)


def cmd_measure(ns: argparse.Namespace, command: str) -> None:
    if ns.num_classes is not None and ns.num_classes <= 0:
        raise CompressError(f"--num-classes must be positive, got {ns.num_classes}")
    req = checkpoint.CheckpointRequest(weights=ns.weights, arch=ns.arch, num_classes=ns.num_classes,
                                     trust_pickle=ns.trust_pickle, with_data=bool(ns.data or ns.dataset),
                                     store=ns.store, onnx_out=ns.onnx_out)
    _emit([checkpoint.measure_checkpoint(session_from(ns, command), req)], ns)


def cmd_report(ns: argparse.Namespace, command: str) -> None:
    ws = workspace(ns)
    names = [ns.dataset] if ns.dataset else ws.store.datasets()
    if not names:
        raise CompressError(f"the results store {ws.store.path} is empty: run `python -m compress run slim-head` first")
    written = []
    for name in names:
        path = markdown.write_report(name, ws.store.rows(name), ns.reports_dir, ns.report_batch,
                                     _beside(ws.root, name), html=ns.html)
        written.append({"dataset": name, "path": str(path)})
        log(f"wrote {path}" + (f" and {path.with_suffix('.html')}" if ns.html else ""))
    if ns.json:
        print(json.dumps(written, indent=2))


def cmd_sensitivity(ns: argparse.Namespace, command: str) -> None:
    if ns.kind == "pruning" and any(not 0 < a < 1 for a in ns.amounts):
        raise CompressError(f"--amounts must be fractions in (0, 1), got {','.join(map(str, ns.amounts))}")
    if ns.kind == "quantization" and ns.calibration_size < 32:
        raise CompressError(f"--calibration-size must be at least 32 images, got {ns.calibration_size}")
    _one_process("sensitivity")
    session = session_from(ns, command)
    settings = ScanSettings(tolerance=ns.tolerance, amounts=tuple(getattr(ns, "amounts", AMOUNTS)),
                            calibration_size=getattr(ns, "calibration_size", ScanSettings.calibration_size))
    scan, path = scanning.run(session, ns.kind, settings, command)
    if ns.json:
        print(json.dumps(scan.to_dict(), indent=2))
    else:
        print(scan_tables.table(scan))
    log(f"stored {path}")
    if session.store.rows(session.data.name):
        _refresh_report(session, session.data.name, ns.reports_dir)


def _one_process(name: str) -> None:
    if dist.current().size > 1:
        raise CompressError(f"`compress {name}` runs in one process (each step is small or already a stored run); "
                            "scale out with `sweep --shard K/N` instead of torchrun")


def cmd_search(ns: argparse.Namespace, command: str) -> None:
    cfg = search.SearchConfig(max_drop=ns.max_drop, objective=ns.objective, budget_min=ns.budget_min,
                              epochs=ns.epochs, trials=ns.trials, seed=ns.search_seed)
    _one_process("search")
    session = session_from(ns, command)
    outcome = search.run(session, cfg, command)
    path = search.save(session, outcome)
    rows = {r.row_id: r for r in session.store.rows(session.data.name)}
    if ns.json:
        print(json.dumps(outcome.to_dict(), indent=2, default=str))
    else:
        print(search_report.table(outcome))
        print()
        print(search_report.winner_line(outcome, rows))
    log(f"stored {path}")
    _refresh_report(session, session.data.name, ns.reports_dir)


def cmd_collect(ns: argparse.Namespace, command: str) -> None:
    ws = workspace(ns)
    got = collect.collect(ws, ns.sources)
    for reason in got.refused:
        log(f"refused: {reason}")
    log(f"collected {len(got.added)} new row(s) into {ws.store.path} ({got.present} already there, "
        f"{len(got.refused)} baseline(s) refused); `compress report --workdir {ws.root}` writes the merged report")
    if ns.json:
        print(json.dumps({"added": got.added, "already_present": got.present, "refused": got.refused}, indent=2))
    if got.refused:
        raise CompressError(f"{len(got.refused)} baseline(s) and their rows were refused (reasons above); the rows "
                            "that were collected are stored")


COMMANDS: dict[str, Callable[[argparse.Namespace, str], None]] = {
    "list": cmd_list, "baseline": cmd_baseline, "run": cmd_run, "sweep": cmd_sweep, "measure": cmd_measure,
    "collect": cmd_collect, "report": cmd_report, "sensitivity": cmd_sensitivity,
    "search": cmd_search,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "python -m compress " + shlex.join(argv)
    ns = build_parser().parse_args(argv)
    with sigterm_as_interrupt(), one_line_errors() as outcome:
        dist.start(getattr(ns, "device", "auto"))  # under torchrun: join the job before anything is checked
        _prepare(ns)
        COMMANDS[ns.command](ns, command)
        dist.stop()
    return outcome.code
