"""`compress measure`: a checkpoint you already have, measured by the same harness as every row."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from compress.data import datasets as data_mod
from compress.data.split import gaps, loaders
from compress.errors import CompressError
from compress.experiments.baseline import EVAL_BATCH, stored_split
from compress.log import log
from compress.measuring.harness import measure_row
from compress.measuring.subject import Measurement, RowInfo, Subject
from compress.models import checkpoints, vgg
from compress.models.artifact import Artifact
from compress.models.checkpoints import DYNAMIC_INT8, DYNAMIC_INT8_BACKEND
from compress.session import Session
from compress.store.rows import ResultRow


@dataclass(frozen=True)
class CheckpointRequest:
    """`compress measure`: a checkpoint you already have, and what to check it against."""

    weights: Path
    arch: str | None = None  # expected architecture (checked against the file)
    num_classes: int | None = None  # expected class count (checked)
    trust_pickle: bool = False
    with_data: bool = False  # score it on the session's data (else: theory and latency only)
    store: bool = False  # add the row to the results store
    onnx_out: Path | None = None  # keep the parity-checked ONNX export here


def measure_checkpoint(session: Session, req: CheckpointRequest) -> ResultRow:
    """Measure a checkpoint through the same harness as every compressed model."""
    imported = checkpoints.load_model(req.weights, req.arch, req.num_classes, req.trust_pickle, half=True,
                                      image_size=session.data.size)
    saved_size = imported.extra.get("image_size") if isinstance(imported.extra, dict) else None
    size = session.data.image_size or (session.data.size if req.with_data else saved_size or 224)
    if size < data_mod.MIN_IMAGE_SIZE:
        raise CompressError(f"--image-size {size} is too small: VGG16 needs at least {data_mod.MIN_IMAGE_SIZE}")
    session = replace(session, data=replace(session.data, image_size=size))
    test_loader, name, notes = None, "no-data", ()
    if req.with_data:
        bundle = data_mod.load(session.data)
        if bundle.num_classes != imported.spec.num_classes:
            raise CompressError(f"{req.weights} predicts {imported.spec.num_classes} classes but {session.data.name} "
                                f"has {bundle.num_classes} ({', '.join(bundle.classes[:5])}...): pick the matching data")
        session.workspace.claim(session.data.name, session.data.source())
        split = stored_split(session.workspace, session.data, bundle)
        notes = tuple(gaps(split, bundle))
        test_loader = loaders(bundle, split, EVAL_BATCH, session.data.seed).test
        name = session.data.name
    keras = imported.extra.get("keras") if isinstance(imported.extra, dict) else None
    config = {"weights": str(Path(req.weights).resolve()), "layout": imported.layout, "arch": imported.spec.arch,
              "spec": imported.spec.to_dict(),
              # with data: all of it, so `export` can read the row's test images again; else what the input is
              "data": session.data.record() if req.with_data else {"normalization": session.data.normalization},
              **({"keras": keras} if keras else {})}
    info = RowInfo(dataset=name, compressor=f"import:{Path(req.weights).name}", config=config,
                   seed=session.data.seed, command=session.command, caveats=(tuple(keras["notes"]) if keras else ()) + notes)
    precision = imported.extra.get("precision")
    if precision in vgg.HALF:  # measured in its own precision, counted on the fp32 structure
        artifact = Artifact(backend=f"pytorch {precision}", file=Path(req.weights), module=imported.model,
                            gpu_note=None, dtype=str(vgg.HALF[precision]).removeprefix("torch."))
        fp32 = vgg.build(imported.spec)
    elif imported.extra.get("quantization") == DYNAMIC_INT8:
        artifact = Artifact(backend=DYNAMIC_INT8_BACKEND, file=Path(req.weights), module=imported.model)
        fp32 = vgg.build(imported.spec)  # same shapes in fp32: params and MACs are counted on it
    else:
        artifact, fp32 = Artifact.fp32(imported.model, Path(req.weights)), imported.model
    subject = Subject(fp32, imported.spec, artifact, session.data.size, Path(req.weights).name)
    row, _ = measure_row(Measurement(subject, session.latency, test_loader, session.device, keep_onnx=req.onnx_out,
                                     temp_root=session.workspace.temp), info)
    if req.store:
        session.store.add(row)
    log(f"{req.weights}: {imported.layout} layout, {imported.spec.arch}, {imported.spec.num_classes} classes")
    return row
