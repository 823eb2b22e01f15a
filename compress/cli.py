"""`python -m compress ...`: list, baseline, run, measure, report.

Flags come from the typed config dataclasses (data, training, latency, and each
compressor's own config), so a new compressor gets its CLI by declaring its config.
Logs go to stderr; `--json` prints result rows as JSON on stdout for scripts.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import shlex
import sys
import types
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Literal, Sequence, Union, get_args, get_origin, get_type_hints

from compress import compressors, data, measure, models, pipeline, report, suite
from compress.compressors import quantization
from compress.errors import CompressError
from compress.train import TrainConfig

HELP = {
    "dataset": "built-in or torchvision dataset: digits (default, offline), cifar10, fashion-mnist",
    "data": "ImageFolder root (one sub-folder of images per class); overrides --dataset",
    "data_root": "where torchvision datasets live",
    "download": "let torchvision download --dataset into --data-root (needs internet)",
    "image_size": "input side in pixels (>= 32; default 32, or 224 for --data folders)",
    "seed": "seed of the split, the initialisation and the data order",
    "test_fraction": "share of the images held out for test when the dataset has no official split",
    "val_fraction": "share of the training images used to pick the best epoch",
    "max_samples": "use a seeded subset of this many images (smoke tests)",
    "epochs": "training epochs",
    "lr": "Adam learning rate",
    "batch_size": "training batch size",
    "weight_decay": "Adam weight decay",
    "augment": "random shifts of up to 1/8 of the side on training images (no flips)",
    "schedule": "learning-rate schedule over the epochs",
    "warmup": "untimed calls before timing",
    "min_calls": "timed calls at least, per batch size",
    "max_calls": "timed calls at most, per batch size",
    "budget_s": "seconds of timing per batch size once --latency-min-calls are in",
    "batches": "batch sizes to time, comma-separated",
    "threads": "CPU threads for timing (default: all cores; recorded in every row)",
    "gpu": "also time on the GPU when CUDA is available",
    "strict": "fail on unreadable images in --data instead of skipping them with a warning",
    "ort": "also export to ONNX (checked against PyTorch) and time it under ONNX Runtime on the CPU",
}


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line, not a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _unwrap_optional(t: Any) -> Any:
    if get_origin(t) in (Union, types.UnionType):
        args = [a for a in get_args(t) if a is not type(None)]
        return args[0] if len(args) == 1 else t
    return t


def _list_of(kind: type) -> Any:
    def parse(text: str) -> tuple[Any, ...]:
        try:
            return tuple(kind(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from None
    parse.__name__ = f"list of {kind.__name__}"
    return parse


def _choice_list(choices: tuple[str, ...]) -> Any:
    def parse(text: str) -> tuple[str, ...]:
        values = tuple(v.strip() for v in text.split(",") if v.strip())
        bad = [v for v in values if v not in choices]
        if bad or not values:
            raise argparse.ArgumentTypeError(
                f"invalid choice {','.join(bad) or text!r}: choose from {', '.join(choices)}")
        return values
    return parse


def add_config_flags(parser: argparse.ArgumentParser, cls: type, prefix: str = "", dest_prefix: str = "",
                     skip: Sequence[str] = (), defaults: dict[str, Any] | None = None, as_lists: bool = False) -> None:
    """One flag per dataclass field; the type annotation decides how it is parsed.

    With as_lists (for `sweep`), every non-boolean flag takes comma-separated values.
    """
    hints = get_type_hints(cls)
    for f in fields(cls):
        if f.name in skip or not f.init:  # init=False fields are facts about the method, not options
            continue
        t = _unwrap_optional(hints[f.name])
        flag = f.metadata.get("flag") or "--" + prefix + f.name.replace("_", "-")
        default = (defaults or {}).get(f.name, f.default if f.default is not MISSING else None)
        kw: dict[str, Any] = {"dest": dest_prefix + f.name, "default": default, "metavar": f.name.upper(),
                              "help": f.metadata.get("help") or HELP.get(f.name, "")}
        if t is bool:
            kw["action"] = argparse.BooleanOptionalAction
            del kw["metavar"]
        elif as_lists and get_origin(t) is not tuple:  # tuple-valued fields (e.g. --hidden) stay fixed
            kw["default"] = default if isinstance(default, tuple) else (default,)
            kw["type"] = _choice_list(get_args(t)) if get_origin(t) is Literal else _list_of(t)
            kw["help"] += " [comma-separated values are swept]"
        elif get_origin(t) is Literal:
            kw["choices"] = list(get_args(t))
            del kw["metavar"]
        elif get_origin(t) is tuple:
            kw["type"] = _list_of(get_args(t)[0])
        else:
            kw["type"] = t
        kw["help"] = kw["help"].replace("%", "%%")  # argparse %-formats help strings
        default = kw.get("default")
        if kw["help"] and default not in (None, False, ()):
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            kw["help"] += f" (default {shown})"
        parser.add_argument(flag, **kw)


def config_from(cls: type, ns: argparse.Namespace, dest_prefix: str = "", **fixed: Any) -> Any:
    values = {f.name: getattr(ns, dest_prefix + f.name) for f in fields(cls)
              if f.init and hasattr(ns, dest_prefix + f.name) and f.name not in fixed}
    return cls(**values, **fixed)


# ---------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------

def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print result rows as JSON on stdout")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where runs, baselines and the results store live (default ./runs or $COMPRESS_HOME)")
    p.add_argument("--reports-dir", type=Path, default=Path("reports"), help="where reports are written")


def _data_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    add_config_flags(g, data.DataConfig, skip=("test_fraction", "val_fraction"))


def _model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", choices=list(models.ARCHS), default="vgg16", help="baseline architecture")
    p.add_argument("--device", default="auto", help="training device: auto, cpu or cuda (default auto)")


def _baseline_epochs_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--baseline-epochs", type=int, default=TrainConfig.epochs,
                   help=f"epochs for the baseline if none is cached (default {TrainConfig.epochs})")


def _resume_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted training of the same configuration from its last epoch checkpoint")


def _export_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--export-onnx", action="store_true",
                   help="keep each measured model's ONNX export (model.onnx, parity-checked) in its run folder")


def _latency_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("latency measurement")
    add_config_flags(g, measure.LatencyConfig, prefix="latency-", dest_prefix="lat_")


def _compressor_parsers(parent: argparse.ArgumentParser, sweep: bool) -> Any:
    """One sub-command per registered compressor, its flags taken from its config dataclass."""
    subs = parent.add_subparsers(dest="compressor", required=True, parser_class=Parser, metavar="COMPRESSOR")
    for name in compressors.names():
        comp = compressors.get(name)
        q = subs.add_parser(name, help=comp.description, description=comp.description)
        _common(q), _data_flags(q), _model_flags(q), _latency_flags(q)
        add_config_flags(q.add_argument_group(f"{name} options"), comp.config, dest_prefix="c_", as_lists=sweep,
                         defaults=comp.sweep_defaults if sweep else None)
        if comp.finetune:
            add_config_flags(q.add_argument_group("fine-tuning (the same budget for every point)" if sweep
                                                  else "fine-tuning"), pipeline.FinetuneConfig,
                             defaults={"epochs": comp.finetune_epochs,
                                       **({"lr": comp.finetune_lr} if comp.finetune_lr else {})})
        _baseline_epochs_flag(q)
        q.add_argument("--from", dest="source", metavar="RUN", default=None,
                       help="start from a stored run (row id, id prefix or run folder) instead of the baseline, "
                            "e.g. quantize a pruned model; the source is re-measured beside the new row")
        _export_flag(q), _resume_flag(q)
    return subs


def _run_all_parser(subs: Any) -> None:
    q = subs.add_parser("all", help="every compressor at its defaults + the pruning sweep + controls, then the report",
                        description="Every registered compressor at its defaults, the pruning sweep (L1 and the "
                                    "random control), prune-then-int8, and each distillation beside its control, "
                                    "all against one cached baseline; then the report.")
    _common(q), _data_flags(q), _model_flags(q), _latency_flags(q)
    _baseline_epochs_flag(q)
    q.add_argument("--epochs", type=int, default=None,
                   help="fine-tuning/training epochs for every step (default: each compressor's own budget)")
    q.add_argument("--amounts", type=_list_of(float), default=suite.SWEEP_AMOUNTS,
                   help="pruning amounts to sweep (default " + ",".join(map(str, suite.SWEEP_AMOUNTS)) + ")")
    _export_flag(q), _resume_flag(q)


def build_parser() -> Parser:
    parser = Parser(prog="compress", description="Compress a VGG16 classifier and measure what it buys you.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("list", help="the registered compressors")
    _common(p)

    p = sub.add_parser("baseline", help="train (or load the cached) VGG16 baseline and measure it")
    _common(p), _data_flags(p), _model_flags(p), _latency_flags(p)
    add_config_flags(p.add_argument_group("training"), TrainConfig)
    p.add_argument("--retrain", action="store_true", help="train again even if a cached baseline exists")
    _export_flag(p), _resume_flag(p)

    p = sub.add_parser("run", help="compress the baseline with one compressor (or `all`), fine-tune, measure")
    _run_all_parser(_compressor_parsers(p, sweep=False))
    p = sub.add_parser("sweep", help="run one compressor over a grid of settings (comma-separated values)")
    _compressor_parsers(p, sweep=True)

    p = sub.add_parser("measure", help="measure a checkpoint you already have")
    _common(p), _latency_flags(p)
    p.add_argument("--weights", type=Path, required=True, help="a state dict (.pth) or a compress checkpoint")
    p.add_argument("--arch", choices=list(models.ARCHS), default=None, help="expected architecture (checked)")
    p.add_argument("--num-classes", type=int, default=None, help="expected number of classes (checked)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow a fully pickled model (unpickling runs code: only for files you trust)")
    p.add_argument("--device", default="auto", help="device for the accuracy pass: auto, cpu or cuda")
    p.add_argument("--store", action="store_true",
                   help="also add the row to the results store (and so to `compress report`)")
    p.add_argument("--export-onnx", type=Path, default=None, metavar="PATH",
                   help="keep the parity-checked ONNX export of the checkpoint at PATH")
    g = p.add_argument_group("data (optional: adds accuracy)")
    add_config_flags(g, data.DataConfig, skip=("test_fraction", "val_fraction"), defaults={"dataset": None})

    p = sub.add_parser("report", help="regenerate reports/<dataset>.md from the stored rows")
    _common(p)
    p.add_argument("--dataset", default=None, help="only this dataset (default: every dataset in the store)")
    return parser


# ---------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------

def _emit(rows: list[Any], as_json: bool, baselines: dict[str, Any] | None = None) -> None:
    if as_json:
        print(json.dumps([r.to_dict() for r in rows], indent=2, default=str))
    else:
        print(report.to_markdown(rows, baselines or {}))


def _workspace(ns: argparse.Namespace) -> pipeline.Workspace:
    return pipeline.Workspace(ns.workdir) if ns.workdir else pipeline.Workspace.default()


def _positive(name: str, value: int | None) -> None:
    if value is not None and value <= 0:
        raise CompressError(f"--{name} must be positive, got {value}")


def _data_cfg(ns: argparse.Namespace) -> data.DataConfig:
    return config_from(data.DataConfig, ns, dataset=ns.dataset or "digits")


def _refresh_report(ws: pipeline.Workspace, dataset: str, reports_dir: Path) -> None:
    path = report.write_report(dataset, ws.store.rows(dataset), reports_dir, suite.last_record(ws.root, dataset))
    pipeline.log(f"report: {path}")


def cmd_list(ns: argparse.Namespace) -> None:
    items = [{"name": n, "description": compressors.get(n).description,
              "options": [f.name for f in fields(compressors.get(n).config) if f.init]} for n in compressors.names()]
    if ns.json:
        print(json.dumps(items, indent=2))
    else:
        width = max(len(i["name"]) for i in items)
        for i in items:
            print(f"{i['name']:<{width}}  {i['description']}")


def cmd_baseline(ns: argparse.Namespace, command: str) -> None:
    ws, dcfg = _workspace(ns), _data_cfg(ns)
    tcfg, lcfg = config_from(TrainConfig, ns), config_from(measure.LatencyConfig, ns, "lat_")
    if tcfg.epochs <= 0:
        raise CompressError(f"--epochs must be positive for the baseline, got {tcfg.epochs}")
    device = pipeline.pick_device(ns.device)
    base = pipeline.ensure_baseline(ws, dcfg, ns.arch, tcfg, device, retrain=ns.retrain, resume=ns.resume)
    row = pipeline.measure_baseline(ws, base, lcfg, device, command, ns.export_onnx)
    pipeline.log(f"baseline test accuracy {100 * (row.accuracy or 0):.2f}% ({row.test_images} images); "
                 f"checkpoint {base.path}")
    _emit([row], ns.json)
    _refresh_report(ws, row.dataset, ns.reports_dir)


def _run_settings(ns: argparse.Namespace) -> tuple[Any, TrainConfig, TrainConfig, measure.LatencyConfig]:
    """Everything `run` and `sweep` share, validated before any work starts."""
    comp = compressors.get(ns.compressor)
    ft = config_from(pipeline.FinetuneConfig, ns) if comp.finetune else pipeline.FinetuneConfig(epochs=0)
    if ns.baseline_epochs <= 0:
        raise CompressError(f"--baseline-epochs must be positive, got {ns.baseline_epochs}")
    bcfg = TrainConfig(epochs=ns.baseline_epochs)  # the baseline's own recipe; --epochs etc. are the fine-tune's
    return comp, bcfg, ft, config_from(measure.LatencyConfig, ns, "lat_")


def cmd_run_all(ns: argparse.Namespace, command: str) -> None:
    if ns.baseline_epochs <= 0:
        raise CompressError(f"--baseline-epochs must be positive, got {ns.baseline_epochs}")
    if ns.epochs is not None and ns.epochs < 0:
        raise CompressError(f"--epochs must be >= 0, got {ns.epochs}")
    for a in ns.amounts:
        compressors.get("pruning").config(amount=a)  # validates each amount before any work
    ws, dcfg = _workspace(ns), _data_cfg(ns)
    lcfg = config_from(measure.LatencyConfig, ns, "lat_")
    device = pipeline.pick_device(ns.device)
    bcfg = TrainConfig(epochs=ns.baseline_epochs)

    def refresh(rows: list[Any]) -> None:
        _refresh_report(ws, rows[0].dataset, ns.reports_dir)

    rows, seconds = suite.run_all(ws, dcfg, ns.arch, bcfg, lcfg, device, command, ns.epochs, tuple(ns.amounts),
                                  refresh, ns.export_onnx, ns.resume)
    suite.record(ws, rows[0].dataset, seconds, command, rows, lcfg)
    refresh(rows)
    pipeline.log(f"run all: {len(rows)} rows in {seconds / 60:.1f} min")
    _emit(rows, ns.json, {rows[0].row_id: rows[0]})


def cmd_run(ns: argparse.Namespace, command: str) -> None:
    if ns.compressor == "all":
        return cmd_run_all(ns, command)
    comp, bcfg, ft, lcfg = _run_settings(ns)
    comp_cfg = config_from(comp.config, ns, "c_")
    ws, dcfg = _workspace(ns), _data_cfg(ns)
    device = pipeline.pick_device(ns.device)
    rows = pipeline.run_with_control(ws, ns.compressor, comp_cfg, dcfg, ns.arch, bcfg, ft, lcfg, device, command,
                                     source=ns.source, keep_onnx=ns.export_onnx, resume=ns.resume)
    _emit(rows, ns.json, {rows[0].row_id: rows[0]})
    _refresh_report(ws, rows[0].dataset, ns.reports_dir)


def cmd_sweep(ns: argparse.Namespace, command: str) -> None:
    comp, bcfg, ft, lcfg = _run_settings(ns)
    hints = get_type_hints(comp.config)
    grid_fields = [f.name for f in fields(comp.config)
                   if f.init and hints[f.name] is not bool and get_origin(_unwrap_optional(hints[f.name])) is not tuple]
    fixed = {f.name: getattr(ns, "c_" + f.name) for f in fields(comp.config)
             if f.init and f.name not in grid_fields}
    points = [comp.config(**fixed, **dict(zip(grid_fields, values)))  # validates every point up front
              for values in itertools.product(*(getattr(ns, "c_" + n) for n in grid_fields))]
    ws, dcfg = _workspace(ns), _data_cfg(ns)
    device = pipeline.pick_device(ns.device)
    base = pipeline.ensure_baseline(ws, dcfg, ns.arch, bcfg, device, resume=ns.resume)
    base_row = pipeline.measure_baseline(ws, base, lcfg, device, command, ns.export_onnx)
    rows = [base_row]
    for i, cfg in enumerate(points, 1):
        label = ", ".join(f"{n}={getattr(cfg, n)}" for n in grid_fields)
        pipeline.log(f"[{i}/{len(points)}] {ns.compressor}: {label}")
        rows += pipeline.run_with_control(ws, ns.compressor, cfg, dcfg, ns.arch, bcfg, ft, lcfg, device, command,
                                          base=base, base_row=base_row, source=ns.source,
                                          keep_onnx=ns.export_onnx, resume=ns.resume)[1:]
    _emit(rows, ns.json, {base_row.row_id: base_row})
    _refresh_report(ws, base_row.dataset, ns.reports_dir)


def cmd_measure(ns: argparse.Namespace, command: str) -> None:
    _positive("num-classes", ns.num_classes)
    lcfg = config_from(measure.LatencyConfig, ns, "lat_")
    imported = models.load_model(ns.weights, ns.arch, ns.num_classes, ns.trust_pickle)
    has_data = bool(ns.data or ns.dataset)
    dcfg = _data_cfg(ns)
    extra_size = imported.extra.get("image_size") if isinstance(imported.extra, dict) else None
    size = ns.image_size or (dcfg.size if has_data else extra_size or 224)
    if size < data.MIN_IMAGE_SIZE:
        raise CompressError(f"--image-size {size} is too small: VGG16 needs at least {data.MIN_IMAGE_SIZE}")
    ws, device = _workspace(ns), pipeline.pick_device(ns.device)
    test_loader, name = None, "no-data"
    if has_data:
        dcfg = dataclasses.replace(dcfg, image_size=size)
        bundle = data.load(dcfg)
        if bundle.num_classes != imported.spec.num_classes:
            raise CompressError(f"{ns.weights} predicts {imported.spec.num_classes} classes but {dcfg.name} has "
                                f"{bundle.num_classes} ({', '.join(bundle.classes[:5])}...): pick the matching data")
        split = pipeline.stored_split(ws, dcfg, bundle)
        test_loader = data.loaders(bundle, split, 64, dcfg.seed).test
        name = dcfg.name
    config = {"weights": str(Path(ns.weights).resolve()), "layout": imported.layout, "arch": imported.spec.arch,
              "spec": imported.spec.to_dict()}
    info = pipeline.RowInfo(dataset=name, compressor=f"import:{Path(ns.weights).name}", config=config,
                            seed=ns.seed, command=command)
    if imported.extra.get("quantization") == models.DYNAMIC_INT8:
        artifact = compressors.Artifact(backend=quantization.TORCH_DYNAMIC_BACKEND, file=Path(ns.weights),
                                        module=imported.model)
        theory = models.build(imported.spec)  # same shapes in fp32: params and MACs are counted on it
    else:
        artifact, theory = compressors.Artifact.fp32(imported.model, Path(ns.weights)), imported.model
    row, _ = pipeline.measure_row(theory, imported.spec, artifact, size, info, lcfg, test_loader, device,
                                  keep_onnx=ns.export_onnx)
    if ns.store:
        ws.store.add(row)
    pipeline.log(f"{ns.weights}: {imported.layout} layout, {imported.spec.arch}, {imported.spec.num_classes} classes")
    _emit([row], ns.json)


def cmd_report(ns: argparse.Namespace) -> None:
    ws = _workspace(ns)
    names = [ns.dataset] if ns.dataset else ws.store.datasets()
    if not names:
        raise CompressError(f"the results store {ws.store.path} is empty: run `python -m compress run slim-head` first")
    written = []
    for name in names:
        path = report.write_report(name, ws.store.rows(name), ns.reports_dir, suite.last_record(ws.root, name))
        written.append({"dataset": name, "path": str(path)})
        pipeline.log(f"wrote {path}")
    if ns.json:
        print(json.dumps(written, indent=2))


def _check_writable(ns: argparse.Namespace) -> None:
    """Output folders are checked before hours of training, not after."""
    targets = [(getattr(ns, "reports_dir", None), "--reports-dir"), (_workspace(ns).root, "--workdir")]
    for path, flag in targets:
        if path is None or ns.command in ("list",):
            continue
        try:
            Path(path).mkdir(parents=True, exist_ok=True)
            ok = os.access(path, os.W_OK)
        except OSError as exc:
            raise CompressError(f"{flag} {path} cannot be created ({exc.strerror}): pass a folder you can write to"
                                ) from None
        if not ok:
            raise CompressError(f"{flag} {path} is not writable: pass a folder you can write to")


def _terminate_as_interrupt() -> None:
    """SIGTERM (kill, a scheduler's timeout) unwinds like Ctrl-C: temporary files are cleaned up."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        def handler(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "python -m compress " + shlex.join(argv)
    parser = build_parser()
    ns = parser.parse_args(argv)
    _terminate_as_interrupt()
    try:
        _check_writable(ns)
        if ns.command == "list":
            cmd_list(ns)
        elif ns.command == "baseline":
            cmd_baseline(ns, command)
        elif ns.command == "run":
            cmd_run(ns, command)
        elif ns.command == "sweep":
            cmd_sweep(ns, command)
        elif ns.command == "measure":
            cmd_measure(ns, command)
        elif ns.command == "report":
            cmd_report(ns)
    except CompressError as exc:
        print(f"compress: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("compress: interrupted; stored results are intact (an interrupted training continues with --resume)",
              file=sys.stderr)
        return 130
    except MemoryError:
        print("compress: error: out of memory: lower --batch-size or --image-size, or use a machine with more "
              "memory; stored results are intact", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is a RuntimeError
        if "out of memory" not in str(exc).lower():
            raise
        where = "the GPU" if "cuda" in str(exc).lower() else "the device"
        print(f"compress: error: {where} ran out of memory "
              f"({str(exc).splitlines()[0][:120]}): lower --batch-size, or pass --device cpu; stored results are "
              "intact", file=sys.stderr)
        return 2
    return 0
