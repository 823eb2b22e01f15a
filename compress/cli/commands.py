"""The commands: each one line of parsing, one call to the layer below, one output."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable

from compress import compressors
from compress.cli import deploy_commands
from compress.cli.flags import SEARCH, config_from
from compress.cli.setup import report_batch, session_from, workspace
from compress.configs import settings_of
from compress.errors import CompressError
from compress.experiments import measure_checkpoint, pipeline, plans, search, sensitivity_scan
from compress.experiments.baseline import reference
from compress.log import log
from compress.reporting import markdown, scan_tables, search_report, terminal
from compress.scaleout import collect, dist
from compress.sensitivity import scans
from compress.sensitivity.scans import ScanSettings
from compress.session import Session
from compress.store import searches
from compress.store.workspace import Workspace
from compress.training.config import FinetuneConfig


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


def _beside(ws: Workspace, dataset: str) -> markdown.Beside:
    """What the report shows besides the rows: the last complete `run all`, the stored scans, the newest search."""
    return markdown.Beside(plans.last_record(ws.run_all_record(dataset)),
                           tuple(scans.stored(ws.sensitivity_dir(dataset))), searches.newest(ws.search_dir(dataset)))


def _refresh_report(session: Session, dataset: str, reports_dir: Path) -> None:
    if not dist.current().main:
        return
    rows = session.store.rows(dataset)
    path = markdown.write_report(dataset, rows, reports_dir, session.report_batch,
                                 _beside(session.workspace, dataset))
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
    if getattr(ns, "freeze_features", False) and getattr(ns, "pretrained", None) is None:
        raise CompressError("run all --freeze-features: without --pretrained it would apply to some steps only; "
                            "run the head-only compressors one by one (run slim-head --freeze-features, run low-rank "
                            "--freeze-features --epochs N)")
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
    chosen["freeze_features"] = freeze_head(ns, comp)
    return comp.finetune_config(**chosen)


def freeze_head(ns: argparse.Namespace, comp: compressors.Compressor) -> bool:
    """--freeze-features: the head-only compressors train their head on cached features; with --pretrained it
    is the baseline's recipe (seed 000) and other compressors fine-tune every layer, as before."""
    if not getattr(ns, "freeze_features", False):
        return False
    if comp.head_only:
        return comp.finetune
    if getattr(ns, "pretrained", None) is None:
        heads = ", ".join(n for n in compressors.names() if compressors.get(n).head_only)
        raise CompressError(f"--freeze-features trains the head alone, but {comp.name} changes the convolutions "
                            f"too: it applies to {heads} and to a --pretrained baseline")
    return False


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
    req = measure_checkpoint.CheckpointRequest(weights=ns.weights, arch=ns.arch, num_classes=ns.num_classes,
                                     trust_pickle=ns.trust_pickle, with_data=bool(ns.data or ns.dataset),
                                     store=ns.store, onnx_out=ns.onnx_out)
    _emit([measure_checkpoint.measure_checkpoint(session_from(ns, command), req)], ns)


def cmd_report(ns: argparse.Namespace, command: str) -> None:
    ws = workspace(ns)
    names = [ns.dataset] if ns.dataset else ws.store.datasets()
    if not names:
        raise CompressError(f"the results store {ws.store.path} is empty: run `python -m compress run slim-head` first")
    written = []
    for name in names:
        rows = ws.store.rows(name)
        timed = {b for r in rows for per_batch in r.latency.values() for b in per_batch}
        batch = report_batch(ns.report_batch, timed, f"the stored rows of {name!r} have")
        path = markdown.write_report(name, rows, ns.reports_dir, batch, _beside(ws, name), html=ns.html)
        written.append({"dataset": name, "path": str(path)})
        log(f"wrote {path}" + (f" and {path.with_suffix('.html')}" if ns.html else ""))
    if ns.json:
        print(json.dumps(written, indent=2))


def cmd_sensitivity(ns: argparse.Namespace, command: str) -> None:
    settings = config_from(ScanSettings, ns)  # checked before any work
    _one_process("sensitivity")
    session = session_from(ns, command)
    scan, path = sensitivity_scan.run(session, ns.kind, settings, command)
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
    cfg = config_from(search.SearchConfig, ns, SEARCH)
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
    got = collect.collect(ws, ns.sources, compressors.names())
    for reason in got.refused:
        log(f"refused: {reason}")
    log(f"collected {len(got.added)} new row(s) into {ws.store.path} ({got.present} already there, "
        f"{len(got.refused)} refusal(s)); `compress report --workdir {ws.root}` writes the merged report")
    if ns.json:
        print(json.dumps({"added": got.added, "already_present": got.present, "refused": got.refused}, indent=2))
    if got.refused:
        raise CompressError(f"{len(got.refused)} baseline(s) or row(s) were refused (reasons above); the rows "
                            "that were collected are stored")


COMMANDS: dict[str, Callable[[argparse.Namespace, str], None]] = {
    "list": cmd_list, "baseline": cmd_baseline, "run": cmd_run, "sweep": cmd_sweep, "measure": cmd_measure,
    "collect": cmd_collect, "report": cmd_report, "sensitivity": cmd_sensitivity,
    "search": cmd_search, "rows": deploy_commands.cmd_rows, "export": deploy_commands.cmd_export,
    "predict": deploy_commands.cmd_predict, "verify": deploy_commands.cmd_verify,
}
