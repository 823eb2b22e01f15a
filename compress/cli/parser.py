"""Which flags each command has: built from the typed configs and the registries, so a new
compressor or runtime gets its flags by being registered.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path
from typing import Any

from compress import compressors
from compress.cli import deploy_commands
from compress.cli.flags import SEARCH, FlagStyle, Parser, add_config_flags, list_of
from compress.data import datasets
from compress.errors import CompressError
from compress.experiments import plans, search
from compress.measuring.timing import REPORT_BATCH, LatencyConfig
from compress.models import pretrained, vgg
from compress.scaleout import shards
from compress.sensitivity import scans
from compress.training.config import BASELINE_PATIENCE, FinetuneConfig, TrainConfig


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print result rows as JSON on stdout")
    p.add_argument("--wide", action="store_true",
                   help="print the full markdown table (every column) instead of the compact one")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where runs, baselines and the results store live (default ./runs or $COMPRESS_HOME)")
    p.add_argument("--reports-dir", type=Path, default=Path("reports"), help="where reports are written")
    p.add_argument("--report-batch", type=int, default=None,
                   help=f"batch size whose latency the tables' speed-ups and the plots use: one of the timed batches "
                        f"(default {REPORT_BATCH}, or the largest timed batch when {REPORT_BATCH} is not timed)")


def _data_flags(p: argparse.ArgumentParser, **defaults: Any) -> None:
    add_config_flags(p.add_argument_group("data"), datasets.DataConfig,
                     FlagStyle(skip=("test_fraction", "val_fraction"), defaults=defaults or None))


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
                   help="train the classifier alone, on features the frozen convolutions compute once: for the "
                        "head-only compressors (slim-head, low-rank) and a --pretrained baseline (seed 000)")
    p.add_argument("--device", default="auto", help="training device: auto, cpu or cuda (default auto)")


def _latency_flags(p: argparse.ArgumentParser) -> None:
    add_config_flags(p.add_argument_group("latency measurement"), LatencyConfig,
                     FlagStyle(prefix="latency-", dest_prefix="lat_"))


def _run_flags(p: argparse.ArgumentParser, baseline_epochs: bool = True) -> None:
    """What every command that trains or reuses the baseline shares."""
    _common(p), _data_flags(p), _model_flags(p), _latency_flags(p)
    if baseline_epochs:
        p.add_argument("--baseline-epochs", type=int, default=TrainConfig.epochs,
                       help=f"epochs for the baseline if none is cached, at most (default {TrainConfig.epochs})")
    p.add_argument("--baseline-patience", type=int, default=BASELINE_PATIENCE, metavar="EPOCHS",
                   help="stop the baseline's training when this many epochs pass without a better validation "
                        f"epoch (default {BASELINE_PATIENCE}; 0: train every epoch)")
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
        add_config_flags(q.add_argument_group(f"{name} options"), comp.config,
                         FlagStyle(dest_prefix="c_", as_lists=sweep, defaults=comp.sweep_defaults if sweep else None))
        if comp.finetune:
            title = "training after compression" + (" (the same budget for every point)" if sweep else "")
            trained = comp.finetune_config()
            add_config_flags(q.add_argument_group(title), FinetuneConfig,
                             FlagStyle(defaults={f.name: getattr(trained, f.name) for f in fields(FinetuneConfig)}))
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
        other = "calibration_size" if kind == "pruning" else "amounts"
        add_config_flags(q.add_argument_group("scan"), scans.ScanSettings, FlagStyle(skip=(other,)))


def _search_parser(sub: Any) -> None:
    text = ("the fastest (or smallest) model within --max-drop points of validation accuracy, across compressors, "
            "their main knobs and prune/slim-head -> int8 compositions (Optuna TPE), within --budget-min minutes")
    p = sub.add_parser("search", help=text, description=text)
    _run_flags(p)
    add_config_flags(p.add_argument_group("search"), search.SearchConfig, FlagStyle(dest_prefix=SEARCH))


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
    deploy_commands.add_parsers(sub, _common)
    return parser
