"""Forward latency of the baseline and every registered compressor's model, under pytest-benchmark.

`pytest --benchmark-only` times each variant with PyTorch eager and with ONNX Runtime at
batch 1 and 32, grouped by runtime and batch so the table compares variants side by side.
The variants are the registry's compressors; the callables timed are the harness's own
(`torch_eager.torch_runner`, `onnx_runtime.ort_runner`), at the harness's thread count.
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

from compress import compressors
from compress.compressors import Context
from compress.data.split import Loaders
from compress.measuring import onnx_export, timing
from compress.measuring.runtimes import onnx_runtime, torch_eager
from compress.models import checkpoints, vgg
from compress.models.artifact import Artifact
from compress.reporting.full_table import latest
from compress.reporting.sections import is_default
from compress.store.sqlite import Store


def variant_names() -> list[str]:
    """The baseline and every registered compressor: a new compressor is benchmarked with no edit here."""
    return ["baseline", *compressors.names()]


BATCHES = (1, 32)
FAKE_IMAGES = 320  # enough for every compressor's default calibration
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
    data = TensorDataset(torch.randn(FAKE_IMAGES, 3, size, size), torch.zeros(FAKE_IMAGES, dtype=torch.long))
    dl = DataLoader(data, batch_size=32)
    return Loaders(dl, dl, dl)


class Variants:
    """Builds each variant once per session, in a temporary folder."""

    def __init__(self, tmp: Path, full_size: bool) -> None:
        self.tmp, self.full_size = tmp, full_size
        self.spec = vgg.ModelSpec(num_classes=10) if full_size else \
            vgg.ModelSpec(num_classes=10, conv_widths=tuple(w // 8 for w in vgg.VGG16_WIDTHS), hidden=(64, 64))
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
        model = checkpoints.load_model(Path(row.model_path), half=True).model.eval()  # fp16/bf16 rows stay half
        onnx = self.tmp / f"{name}.onnx"
        if row.backend == "pytorch fp32":
            onnx_export.export_onnx(model, onnx, torch.randn(4, 3, row.image_size, row.image_size))
        return Variant(name, f"stored {row.row_id}", model, onnx if onnx.exists() else None, row.image_size,
                       row.num_classes)

    def _build(self, name: str) -> Variant:
        size = 32
        torch.manual_seed(0)
        base = vgg.build(self.spec).eval()
        ctx = Context(loaders=_fake_loaders(size), device=torch.device("cpu"), num_classes=10, image_size=size,
                      run_dir=self.tmp / name, threads=None)
        if name == "baseline":
            out: Any = (base, self.spec)
        else:
            comp = compressors.get(name)
            cfg = comp.config()
            out = comp.fn(copy.deepcopy(base), self.spec, cfg, ctx)
            if comp.finalize is not None and not isinstance(out, Artifact):
                out = (comp.finalize(out[0]), out[1])
        if isinstance(out, Artifact):
            return Variant(name, "built untrained", out.module, out.onnx, size)
        model = out[0].eval()
        onnx = self.tmp / f"{name}.onnx"
        onnx_export.export_onnx(model, onnx, torch.randn(4, 3, size, size))
        return Variant(name, "built untrained", model, onnx, size)


@pytest.fixture(scope="session")
def variants(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Variants:
    return Variants(tmp_path_factory.mktemp("bench"), full_size=_timing(request.config))


def _call(variant: Variant, runtime: str, batch: int) -> Callable[[], Any]:
    """The harness's own callable for this runtime: what `compress run` times is what is benchmarked."""
    shape = (3, variant.image_size, variant.image_size)
    if runtime == torch_eager.TORCH_CPU:
        assert variant.module is not None
        return torch_eager.torch_runner(variant.module, shape, batch, torch.device("cpu"))
    assert variant.onnx is not None
    return onnx_runtime.ort_runner(onnx_export.session(variant.onnx), shape, batch)


RUNTIMES = (torch_eager.TORCH_CPU, onnx_runtime.ORT_CPU)
CASES = [(v, rt, b) for v in variant_names() for rt in RUNTIMES for b in BATCHES]


@pytest.mark.parametrize("name,runtime,batch", CASES, ids=[f"{v}-{rt}-b{b}" for v, rt, b in CASES])
def test_forward_latency(benchmark: Any, variants: Variants, name: str, runtime: str, batch: int) -> None:
    variant = variants.get(name)
    if runtime == onnx_runtime.ORT_CPU and variant.onnx is None:
        pytest.skip(f"{name}: no ONNX model ({variant.origin})")
    if runtime == torch_eager.TORCH_CPU and variant.module is None:
        pytest.skip(f"{name}: runs as an ONNX file only ({variant.origin})")
    benchmark.group = f"{runtime} batch {batch}"
    fn = _call(variant, runtime, batch)
    with timing.torch_threads(None) as threads:  # the harness's default: all cores, recorded
        benchmark.extra_info.update({"variant": name, "origin": variant.origin, "threads": threads,
                                     "image_size": variant.image_size})
        out = benchmark.pedantic(fn, rounds=ROUNDS[batch], iterations=1, warmup_rounds=3)
    assert tuple(out.shape) == (batch, variant.num_classes) and bool(np.isfinite(np.asarray(out)).all())
