"""`rows`, `export`, `predict`, `verify`: from a stored row to a model running where it is deployed.

`predict` and `verify` run the bundle's own torch-free code (compress/deploy), the code its predict.py runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from rich import box
from rich.console import Console
from rich.table import Table

from compress.cli.setup import workspace
from compress.deploy import runner, sessions
from compress.deploy import verify as verifying
from compress.deploy.bundle import Bundle, BundleError
from compress.errors import CompressError, printable
from compress.experiments.export import ExportRequest, export
from compress.log import log
from compress.reporting.cells import summary
from compress.store.lookup import short
from compress.store.rows import ResultRow


def add_parsers(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """The four commands' flags (`common`: the parser module's --workdir/--json flags)."""
    p = sub.add_parser("rows", help="the stored rows with their ids, to name one for export")
    common(p)
    p.add_argument("--dataset", default=None, help="only this dataset's rows")
    p = sub.add_parser("export", help="a measured row as a deploy bundle whose predict.py needs no PyTorch")
    common(p)
    p.add_argument("row", metavar="ROW", help="a row id, a unique prefix of one, its run folder, or the report's "
                   "compressor-hash form (`compress rows` lists them)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="the bundle's folder (new or empty)")
    p.add_argument("--format", choices=["onnx", "openvino"], default=None,
                   help="an fp32 row's file: onnx (default) or openvino (an fp32 IR); an int8 row ships its "
                        "measured file as it is")
    p.add_argument("--test-images", action="store_true",
                   help="also write the row's test images into the bundle (the exact pixels the harness scored), "
                        "for `verify` and predict.py")
    text = "the class of each image, from a bundle: the code its predict.py runs (`compress predict DIR --help`)"
    q = sub.add_parser("predict", help=text, description=text)
    q.add_argument("bundle", type=Path, metavar="DIR", help="a folder written by `compress export`")
    q.add_argument("rest", nargs=argparse.REMAINDER, metavar="PATH ... [--runtime ort|openvino] [--top-k K] "
                   "[--json|--csv]", help="what predict.py takes: images or folders, then its flags")
    text = ("re-check a bundle's figures on this machine: top-1 on a labelled folder, latency at batch 1 and 32, "
            "the CPU's instruction sets")
    q = sub.add_parser("verify", help=text, description=text)
    q.add_argument("bundle", type=Path, metavar="DIR", help="a folder written by `compress export`")
    q.add_argument("--runtime", choices=[sessions.ORT, sessions.OPENVINO], default=None,
                   help="ort or openvino (default: the runtime the row was measured on)")
    q.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    q.add_argument("--data", type=Path, required=True, metavar="FOLDER",
                   help="a labelled folder: one sub-folder of images per class, named as the bundle's classes")
    q.add_argument("--json", action="store_true", help="print the verdict as JSON")


def cmd_rows(ns: argparse.Namespace, command: str) -> None:
    ws = workspace(ns)
    if not ws.store.path.is_file():
        raise CompressError(f"no results store in {ws.root}: pass the --workdir your runs wrote to (default ./runs)")
    rows = ws.store.rows(ns.dataset)
    items = [_row_item(r) for r in rows]
    if ns.json:
        print(json.dumps(items, indent=2, ensure_ascii=False))
        return
    table = Table(box=box.SIMPLE_HEAD)
    for col in ("row id", "short", "dataset", "compressor", "setting", "top-1 %", "size MB", "b32 ms by runtime"):
        table.add_column(col, overflow="fold", no_wrap=col in ("row id", "short"))
    for i in items:
        table.add_row(*(printable(str(v)) for v in (i["row_id"], i["short"], i["dataset"], i["compressor"],
                                                    i["setting"], i["top1"], i["size_mb"], i["b32_ms"])))
    Console(file=sys.stdout, width=160).print(table)
    log(f"{len(items)} row(s) in {ws.store.path}; `python -m compress export ROW --out DIR` ships one")


def _row_item(r: ResultRow) -> dict[str, object]:
    return {"row_id": r.row_id, "short": short(r), "dataset": r.dataset, "compressor": r.compressor,
            "setting": summary(r), "backend": r.backend,
            "top1": "" if r.accuracy is None else f"{100 * r.accuracy:.2f}",
            "size_mb": f"{r.size_bytes / 1e6:.1f}",
            "b32_ms": ", ".join(f"{rt} {v.median_ms:.1f}" for rt, per in r.latency.items() if (v := per.get(32)))}


def cmd_export(ns: argparse.Namespace, command: str) -> None:
    manifest = export(workspace(ns), ExportRequest(ns.row, ns.out, ns.format, ns.test_images))
    if ns.json:
        print(json.dumps({"bundle": str(ns.out), **manifest}, indent=2, ensure_ascii=False))


def cmd_predict(ns: argparse.Namespace, command: str) -> None:
    """The bundle's runner itself, so `compress predict` and predict.py cannot disagree."""
    code = runner.main(ns.rest, bundle_dir=ns.bundle, prog="compress predict")
    if code:
        raise SystemExit(code)


def cmd_verify(ns: argparse.Namespace, command: str) -> None:
    try:
        bundle = Bundle.open(ns.bundle)
        verdict = verifying.verify(bundle, ns.data, ns.runtime, ns.threads)
    except (BundleError, runner.UsageError, sessions.SessionError) as exc:
        raise CompressError(str(exc)) from None
    if ns.json:
        print(json.dumps(verdict.to_dict(), indent=2, ensure_ascii=False))
    for line in verifying.lines(verdict, bundle.runtime(ns.runtime)):
        print(line, file=sys.stderr if ns.json else sys.stdout)
    if verdict.mismatches:
        raise CompressError(f"{len(verdict.mismatches)} of the row's own test images gave another answer here than "
                            "when the row was measured: this machine does not run the model as it was measured")
