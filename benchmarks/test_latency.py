"""Forward latency of the baseline and every compressed model, under pytest-benchmark.

`pytest --benchmark-only` times each variant with PyTorch eager and with ONNX Runtime at
batch 1 and 32, grouped by backend and batch so the table compares variants side by side.
It uses the newest stored model of each compressor (COMPRESS_HOME or ./runs, dataset
digits or $COMPRESS_BENCH_DATASET); a compressor with no stored model is built on the spot
with untrained weights, which cost the same time per forward pass. Under plain `pytest`
the same tests run once each on narrow models, as correctness checks of this file.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from compress import compressors, export, models
from compress.compressors import Artifact, Context
from compress.data import Loaders
from compress.report import is_default, latest
from compress.results import Store

VARIANTS = ("baseline", "slim-head", "pruning", "depthwise", "distillation", "quantization")
BATCHES = (1, 32)
ROUNDS = {1: 50, 32: 15}  # one call per round; enough rounds that the median settles on 2 cores


@dataclass
class Variant:
    name: str
    origin: str  # "stored <row id>" or "built untrained"
    module: nn.Module | None  # PyTorch eager (None for an int8 ONNX file)
    onnx: Path | None
    image_size: int
    num_classes: int = 10


def _timing(config: pytest.Config) -> bool:
    return not config.getoption("benchmark_disable", default=True)


def _stored(name: str) -> Any:
    root = Path(os.environ.get("COMPRESS_HOME", "runs"))
    rows = Store(root / "results.sqlite").rows(os.environ.get("COMPRESS_BENCH_DATASET", "digits"))
    picked = [r for r in latest(rows) if r.compressor == name and Path(r.model_path).exists()
              and not r.config.get("source")]
    defaults = [r for r in picked if is_default(r)]  # e.g. pruning 0.3 L1 rather than the last sweep point
    return (defaults or picked or [None])[-1]


def _fake_loaders(size: int) -> Loaders:
    """Random images: enough for calibration and a parity check when timing untrained variants."""
    data = TensorDataset(torch.randn(64, 3, size, size), torch.zeros(64, dtype=torch.long))
    dl = DataLoader(data, batch_size=32)
    return Loaders(dl, dl, dl)


class Variants:
    """Builds each variant once per session, in a temporary folder."""

    def __init__(self, tmp: Path, full_size: bool) -> None:
        self.tmp, self.full_size = tmp, full_size
        self.spec = models.ModelSpec(num_classes=10) if full_size else \
            models.ModelSpec(num_classes=10, conv_widths=tuple(w // 8 for w in models.VGG16_WIDTHS), hidden=(64, 64))
        self.cache: dict[str, Variant] = {}

    def get(self, name: str) -> Variant:
        if name not in self.cache:
            self.cache[name] = self._load(name) if self.full_size else self._build(name)
        return self.cache[name]

    def _load(self, name: str) -> Variant:
        row = _stored(name)
        if row is None:
            return self._build(name)
        if str(row.model_path).endswith(".onnx"):
            return Variant(name, f"stored {row.row_id}", None, Path(row.model_path), row.image_size, row.num_classes)
        model = models.load_model(Path(row.model_path)).model.eval()
        onnx = self.tmp / f"{name}.onnx"
        if row.backend == "pytorch fp32":
            export.export_onnx(model, onnx, torch.randn(4, 3, row.image_size, row.image_size))
        return Variant(name, f"stored {row.row_id}", model, onnx if onnx.exists() else None, row.image_size,
                       row.num_classes)

    def _build(self, name: str) -> Variant:
        size = 32
        torch.manual_seed(0)
        base = models.build(self.spec).eval()
        ctx = Context(loaders=_fake_loaders(size), device=torch.device("cpu"), num_classes=10, image_size=size,
                      run_dir=self.tmp / name, threads=None)
        if name == "baseline":
            out: Any = (base, self.spec)
        else:
            comp = compressors.get(name)
            cfg = comp.config() if name != "quantization" else comp.config(calibration_size=64)
            out = comp.fn(copy.deepcopy(base), self.spec, cfg, ctx)
            if comp.finalize is not None and not isinstance(out, Artifact):
                out = (comp.finalize(out[0]), out[1])
        if isinstance(out, Artifact):
            return Variant(name, "built untrained", out.module, out.onnx, size)
        model = out[0].eval()
        onnx = self.tmp / f"{name}.onnx"
        export.export_onnx(model, onnx, torch.randn(4, 3, size, size))
        return Variant(name, "built untrained", model, onnx, size)


@pytest.fixture(scope="session")
def variants(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Variants:
    return Variants(tmp_path_factory.mktemp("bench"), full_size=_timing(request.config))


def _call(variant: Variant, backend: str, batch: int) -> Callable[[], Any]:
    shape = (batch, 3, variant.image_size, variant.image_size)
    if backend == "pytorch":
        assert variant.module is not None
        x = torch.randn(*shape)
        model = variant.module

        def run_torch() -> Any:
            with torch.inference_mode():
                return model(x)

        return run_torch
    assert variant.onnx is not None
    sess = export.session(variant.onnx)
    xn = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    return lambda: export.run(sess, xn)


CASES = [(v, backend, b) for v in VARIANTS for backend in ("pytorch", "onnxruntime") for b in BATCHES
         if not (v == "quantization" and backend == "pytorch")]  # the int8 ONNX file has no eager model


@pytest.mark.parametrize("name,backend,batch", CASES, ids=[f"{v}-{bk}-b{b}" for v, bk, b in CASES])
def test_forward_latency(benchmark: Any, variants: Variants, name: str, backend: str, batch: int) -> None:
    variant = variants.get(name)
    if backend == "onnxruntime" and variant.onnx is None:
        pytest.skip(f"{name}: no ONNX model ({variant.origin})")
    benchmark.group = f"{backend} batch {batch}"
    benchmark.extra_info.update({"variant": name, "origin": variant.origin, "threads": torch.get_num_threads(),
                                 "image_size": variant.image_size})
    fn = _call(variant, backend, batch)
    out = benchmark.pedantic(fn, rounds=ROUNDS[batch], iterations=1, warmup_rounds=3)
    assert tuple(out.shape) == (batch, variant.num_classes) and bool(np.isfinite(np.asarray(out)).all())
