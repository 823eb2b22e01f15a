"""`compress sensitivity pruning|quantization`: scan the baseline on the validation split and store the scan.

One scan per baseline (its cache folder names the file; the sha256 of its weights is inside, so
a scan of other weights is never used for `run pruning --per-layer sensitivity`).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from compress.experiments.baseline import EVAL_BATCH, ensure_baseline
from compress.log import log
from compress.sensitivity import int8_layers
from compress.sensitivity.pruning import scan_pruning
from compress.sensitivity.scans import PruningScan, QuantizationScan, ScanSettings, save, scan_path
from compress.session import Session
from compress.store.digest import file_digest


def run(session: Session, kind: str, settings: ScanSettings, command: str) -> tuple[PruningScan | QuantizationScan, Path]:
    base = ensure_baseline(session)
    digest = file_digest(Path(base.path))
    path = scan_path(session.workspace.sensitivity_dir(session.data.name), Path(base.path).parent.name, kind)
    ld = base.loaders(EVAL_BATCH)
    val_images = sum(len(y) for _, y in ld.val)
    start = time.perf_counter()
    scan: PruningScan | QuantizationScan
    if kind == "pruning":
        log(f"pruning sensitivity: {len(settings.amounts)} amounts per convolution, {val_images} validation images")
        val_acc, curves = scan_pruning(base.model, ld.val, session.device, settings.amounts)
        scan = PruningScan(digest, val_images, val_acc, settings.amounts, tuple(curves),
                           time.perf_counter() - start, command, tolerance=settings.tolerance)
    else:
        scan = int8_layers.scan(base.model.cpu(), ld, replace(settings, temp_root=session.workspace.temp), digest,
                         command)
    base.model.cpu()
    save(path, scan)
    log(f"{kind} sensitivity took {scan.seconds:.0f} s")
    return scan, path
