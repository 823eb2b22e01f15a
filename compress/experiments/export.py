"""`compress export ROW --out DIR`: the measured model, shipped with what it was measured with.

The bundle holds exactly what was measured (an int8 row's ONNX or IR file byte for byte; an fp32 row through the
suite's parity-checked ONNX export, or an OpenVINO IR kept in fp32), the preprocessing and class names it was
scored with, its figures and machine, and a torch-free runner (compress/deploy). Before anything is written the
bundle's own runner predicts the row's test images and must give the row's answers, image for image.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from compress.data import datasets
from compress.data.datasets import DataBundle, DataConfig
from compress.data.split import Split, loaders
from compress.deploy import bundle as bundle_fmt
from compress.errors import CompressError
from compress.experiments import bundle_parts
from compress.experiments.baseline import EVAL_BATCH, stored_split
from compress.log import log
from compress.store.atomic import umask
from compress.store.lookup import resolve
from compress.store.rows import ResultRow, decode
from compress.store.workspace import Workspace

Format = Literal["onnx", "openvino"]



@dataclass(frozen=True)
class ExportRequest:
    """Which row, where to, in which format, and whether the test images travel with it."""

    ref: str  # a row id, a unique prefix, a run folder, or the report's compressor-hash
    out: Path
    format: Format | None = None  # None: the row's own (its int8 file, or ONNX for an fp32 row)
    test_images: bool = False  # also write the row's test images (the exact pixels the harness scored)


@dataclass
class RowData:
    """The data a row was scored on, opened again: its config, the images and the stored split."""

    cfg: DataConfig
    bundle: DataBundle
    split: Split


def row_data(ws: Workspace, row: ResultRow) -> RowData:
    """The row's own data and split, or one line saying why they cannot be had."""
    rec = (row.config or {}).get("data")
    if not isinstance(rec, dict) or "dataset" not in rec:
        raise CompressError(f"row {row.row_id} does not record the data it was scored on (measured without data, or "
                            "before rows recorded it): measure it again with --data and --store, then export that row")
    try:
        cfg = DataConfig(**rec)
        if not ws.split_path(cfg.key()).is_file():
            raise CompressError(f"the split of {cfg.name} ({ws.split_path(cfg.key())}) is gone from {ws.root}")
        bundle = datasets.load(cfg)
        split = stored_split(ws, cfg, bundle)
    except CompressError as exc:
        raise CompressError(f"row {row.row_id}'s test images cannot be read again: {exc}") from None
    return RowData(cfg, bundle, split)


def harness_predictions(ws: Workspace, row: ResultRow) -> np.ndarray | None:
    """The classes the harness predicted for each test image (predictions.npy in the row's run folder), when kept."""
    path = ws.predictions(row.dataset, row.compressor, row.row_id)
    if not path.is_file():
        return None
    preds = np.load(path, allow_pickle=False)
    return preds if preds.shape == (row.test_images,) else None


def check_answers(ws: Workspace, row: ResultRow, got: np.ndarray, labels: np.ndarray, what: str) -> dict[str, Any]:
    """The bundle's answers on the row's test images against the harness's: refused unless every one is the same."""
    if len(got) != row.test_images:
        raise CompressError(f"row {row.row_id} was scored on {row.test_images} test images, the data now gives "
                            f"{len(got)}: the data changed; the bundle was not written")
    want = harness_predictions(ws, row)
    if want is not None:
        differ = np.flatnonzero(want != got)
        basis = "the harness's predicted class"
    else:  # a row without predictions.npy (measure --store): its per-image correctness
        differ = np.flatnonzero(decode(row.correct or "") != (got == labels))
        basis = "the harness's per-image correctness"
    if len(differ):
        raise CompressError(f"{what} changes {len(differ)} of {len(got)} test answers against {basis} (first: image "
                            f"{int(differ[0])}): the bundle was not written")
    return {"images": int(len(got)), "same_answers": int(len(got)), "against": basis}


def export(ws: Workspace, req: ExportRequest) -> dict[str, Any]:
    """Write the bundle of one row to `req.out` (a new folder, written whole or not at all); return its manifest."""
    row = resolve(ws, req.ref)
    kind = bundle_parts.model_kind(row, ws)
    out = Path(req.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CompressError(f"--out {out} already exists and is not an empty folder: pass a new folder (nothing in "
                            f"{out} was changed)")
    data = row_data(ws, row)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        manifest = _build(ws, row, kind, data, req, stage)
        if out.exists():
            out.rmdir()
        stage.chmod(0o777 & ~umask())  # mkdtemp's folder is private; a bundle is meant to be shared
        stage.rename(out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    log(f"bundle of row {row.row_id} ({row.compressor}) written to {out}: python {out / 'predict.py'} PHOTO")
    return manifest


def _build(ws: Workspace, row: ResultRow, kind: str, data: RowData, req: ExportRequest, stage: Path) -> dict[str, Any]:
    test = loaders(data.bundle, data.split, EVAL_BATCH, data.cfg.seed).test
    x = np.concatenate([xb.numpy() for xb, _ in test]) if row.test_images else np.zeros((0,))
    labels = np.concatenate([yb.numpy() for _, yb in test]).astype(np.int64)
    manifest = bundle_parts.base_manifest(row, data.cfg, data.bundle.classes)
    manifest["model"], agreement = bundle_parts.write_model(row, kind, req.format, stage, x, manifest)
    bundle_parts.write_runner(stage, manifest)
    files = bundle_parts.test_files(data.bundle, data.split, data.cfg, stage if req.test_images else None)
    manifest["test_files"] = [f.record() for f in files]
    answers = bundle_parts.runner_answers(stage, manifest, files, x)
    manifest["agreement"] = {**agreement, "runner": check_answers(ws, row, answers, labels, "the bundle's runner")}
    for record, predicted in zip(manifest["test_files"], answers):
        record["prediction"] = int(predicted)
    manifest["files"] = bundle_fmt.digests(stage)
    (stage / bundle_fmt.MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
                                             encoding="utf-8")
    return manifest

