"""From flags to one Session, and the checks every command makes before any work."""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable

from compress import compressors
from compress.cli.faults import check_writable
from compress.cli.flags import config_from
from compress.data import datasets
from compress.errors import CompressError
from compress.log import log
from compress.measuring.timing import REPORT_BATCH, LatencyConfig
from compress.models import keras_convert, keras_read
from compress.scaleout import dist
from compress.session import BaselineSource, Session, pick_device
from compress.store.atomic import clean_stale
from compress.store.workspace import Workspace
from compress.training.config import BASELINE_PATIENCE, TrainConfig

READ_ONLY = ("report", "rows", "export")  # commands that read the workdir and write elsewhere
STARTED = time.time()  # files older than this process and no longer written to are leftovers


def workspace(ns: argparse.Namespace) -> Workspace:
    return Workspace(ns.workdir) if ns.workdir else Workspace.default()


def _workdir_flag(ns: argparse.Namespace) -> str:
    """What set the workspace, for error messages: the flag, or the environment variable."""
    return "--workdir" if ns.workdir or not os.environ.get("COMPRESS_HOME") else "$COMPRESS_HOME"


def prepare(ns: argparse.Namespace) -> None:
    """Before any work: output folders writable, the store readable, leftovers of killed runs cleaned."""
    if ns.command in ("list", "predict", "verify") or getattr(ns, "dry_run", False):  # no workdir
        return
    ws = workspace(ns)
    if ns.command in READ_ONLY and not ws.root.is_dir():  # these read a workdir; they never make one
        raise CompressError(f"the workdir {ws.root} does not exist ({_workdir_flag(ns)}): pass the --workdir your "
                            "runs wrote to (default ./runs, or $COMPRESS_HOME)")
    targets = [] if ns.command in ("rows", "export") else [(getattr(ns, "reports_dir", None), "--reports-dir")]
    if ns.command not in READ_ONLY:
        targets.append((ws.root, _workdir_flag(ns)))
    if not dist.current().main:  # under torchrun rank 0 alone touches the workdir and the store
        return
    check_writable(targets)
    ws.store.check()
    if ns.command not in READ_ONLY:  # under torchrun rank 0 alone cleans (and writes)
        folders, runs = ws.own_folders(compressors.names())
        files, freed = clean_stale(folders, runs, ws.temp, STARTED)
        if files:
            log(f"cleaned {files} leftover file(s) of interrupted runs under {ws.root} ({freed / 1e6:.1f} MB freed)")


def _model_input(ns: argparse.Namespace) -> dict[str, Any]:
    """What the baseline model brings with it: a Keras file the normalization it expects and the image size it was
    built for; ImageNet weights ImageNet's statistics. DataConfig decides the normalization from it, once."""
    path = getattr(ns, "baseline_weights", None) or getattr(ns, "weights", None)
    if path is not None and Path(path).is_file() and keras_read.is_keras(Path(path)):
        expected = keras_convert.expected(Path(path))
        found = {"model_expects": expected["normalization"]}
        if getattr(ns, "image_size", None) is None and expected["input_size"]:
            found["image_size"] = expected["input_size"]
        return found
    if getattr(ns, "pretrained", None) is not None:
        return {"model_expects": "imagenet"}
    return {}


def report_batch(asked: int | None, timed: Iterable[int], what: str) -> int:
    """The batch the tables' speed-ups use: the one asked for, refused when no figure is timed at it (the
    speed-up column would vanish while the legend says that batch); by default REPORT_BATCH, else the largest."""
    timed = sorted(set(timed))
    if asked is None:
        return REPORT_BATCH if REPORT_BATCH in timed or not timed else timed[-1]
    if asked not in timed:
        also = f" (or add {asked} to --latency-batches)" if "--latency-batches" in what else \
            f" (or measure again with --latency-batches {asked})"
        raise CompressError(f"--report-batch {asked}: {what} only batch(es) {', '.join(map(str, timed)) or 'none'}; "
                            f"pass one of them{also}")
    return asked


def session_from(ns: argparse.Namespace, command: str) -> Session:
    """Every setting of this invocation, validated once before any work."""
    if getattr(ns, "baseline_epochs", 1) <= 0:
        raise CompressError(f"--baseline-epochs must be positive, got {ns.baseline_epochs}")
    if ns.report_batch is not None and ns.report_batch < 1:
        raise CompressError(f"--report-batch must be a positive batch size, got {ns.report_batch}")
    patience = getattr(ns, "baseline_patience", BASELINE_PATIENCE)
    if patience < 0:
        raise CompressError(f"--baseline-patience must be >= 0 epochs (0: never stop early), got {patience}")
    if ns.command == "baseline":
        train = replace(config_from(TrainConfig, ns), patience=patience or None)
        if train.epochs <= 0:
            raise CompressError(f"--epochs must be positive for the baseline, got {train.epochs}")
    else:  # the baseline's own recipe; --epochs etc. are the fine-tune's
        train = TrainConfig(epochs=getattr(ns, "baseline_epochs", TrainConfig.epochs), patience=patience or None)
    source = BaselineSource(weights=getattr(ns, "baseline_weights", None), trust_pickle=ns.trust_pickle,
                            arch=ns.arch, pretrained=getattr(ns, "pretrained", None),
                            download=bool(getattr(ns, "download", False)),
                            freeze_features=getattr(ns, "freeze_features", False)
                            and (getattr(ns, "pretrained", None) is not None or ns.command == "baseline"))
    data_cfg = config_from(datasets.DataConfig, ns, dataset=ns.dataset or "digits", **_model_input(ns))
    if data_cfg.model_expects and data_cfg.normalization != data_cfg.model_expects:
        log(f"note: --normalization {data_cfg.normalization} although the baseline expects "
            f"{data_cfg.model_expects}; its cache and rows are kept apart from the default's")
    Workspace.check_dataset_name(data_cfg.name)
    if ns.command != "measure" or data_cfg.data or getattr(ns, "dataset", None):  # measure without data: no dataset
        workspace(ns).claim(data_cfg.name, data_cfg.source(), write=False)  # a name clash fails before any work
    latency = config_from(LatencyConfig, ns, "lat_")
    ns.report_batch = report_batch(ns.report_batch, latency.batches, "--latency-batches times")
    return Session(workspace=workspace(ns), data=data_cfg, baseline=source,
                   arch=ns.arch or "vgg16", baseline_train=train, latency=latency,
                   device=pick_device(ns.device), command=command, keep_onnx=getattr(ns, "export_onnx", False),
                   resume=getattr(ns, "resume", False), retrain=getattr(ns, "retrain", False),
                   report_batch=ns.report_batch)
