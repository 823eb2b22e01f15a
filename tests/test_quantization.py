"""Int8 that is measured as int8, and the ONNX export every model goes through."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from compress.compressors.quantization import QuantizationConfig, quantization
from compress.errors import CompressError
from compress.measuring import counting, harness, onnx_export, timing
from compress.int8.calibration import calibration_batches
from compress.measuring.runtimes import cuda, onnx_runtime, torch_eager
from compress.measuring.subject import Measurement, RowInfo, Subject
from compress.models import checkpoints, vgg
from compress.models.artifact import Artifact
from tests.helpers import TINY
from tests.helpers import int8_ctx as _ctx
from tests.helpers import tiny_loaders as _loaders


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return vgg.build(TINY).eval()


def test_onnx_export_matches_pytorch_within_tolerance(tiny: torch.nn.Module, tmp_path: Path) -> None:
    x = torch.randn(8, 3, 32, 32)
    diff = onnx_export.export_onnx(tiny, tmp_path / "m.onnx", x)
    assert 0 <= diff <= onnx_export.PARITY_ATOL
    got = onnx_export.run(onnx_export.session(tmp_path / "m.onnx", 1), np.random.default_rng(1).standard_normal(
        (5, 3, 32, 32), dtype=np.float32))
    assert got.shape == (5, 4)  # the batch axis is dynamic


def test_onnx_export_that_disagrees_fails_and_leaves_no_file(tiny: torch.nn.Module, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_export, "parity", lambda *a: 0.25)
    with pytest.raises(CompressError, match=r"max \|ORT - PyTorch\| = 0.25 .* above 0.0001"):
        onnx_export.export_onnx(tiny, tmp_path / "m.onnx", torch.randn(4, 3, 32, 32))
    assert not (tmp_path / "m.onnx").exists()


def test_onnxruntime_int8_is_a_smaller_int8_file_that_still_classifies(tiny: torch.nn.Module,
                                                                      tmp_path: Path) -> None:
    art = quantization(copy.deepcopy(tiny), TINY, QuantizationConfig(calibration_size=32), _ctx(tmp_path))
    assert isinstance(art, Artifact) and art.onnx is not None and art.module is None
    assert art.file == art.onnx and art.fp32_onnx is not None
    assert counting.file_size(art.file) < 0.5 * counting.file_size(art.fp32_onnx)
    import onnx

    ops = {n.op_type for n in onnx.load(str(art.onnx)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    assert not list(art.onnx.parent.glob("*.pre.onnx")) and not list(art.onnx.parent.glob("augmented*"))
    x = torch.randn(6, 3, 32, 32)
    out = onnx_export.run(onnx_export.session(art.onnx, 1), x.numpy())
    assert out.shape == (6, 4) and np.isfinite(out).all()
    with torch.no_grad():
        ref = tiny(x).numpy()
    # int8 approximates this very model: 3.5% relative error measured; another model's logits are ~96% off
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 0.15
    assert "first conv + last linear fp32" in art.backend


def test_keep_fp32_leaves_the_first_and_last_layer_unquantized(tiny: torch.nn.Module, tmp_path: Path) -> None:
    import onnx

    def quantized_weights(keep: str) -> tuple[int, list[str]]:
        art = quantization(copy.deepcopy(tiny), TINY, QuantizationConfig(calibration_size=32, keep_fp32=keep),
                           _ctx(tmp_path / keep))
        graph = onnx.load(str(art.onnx)).graph
        deq = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
        compute = [n for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
        return len(compute), ["int8" if n.input[1] in deq else "fp32" for n in compute]

    n, none = quantized_weights("none")
    assert none == ["int8"] * n
    _, kept = quantized_weights("first-last")
    assert kept == ["fp32"] + ["int8"] * (n - 2) + ["fp32"]


def test_int8_accuracy_comes_from_the_int8_session_not_the_fp32_model(tmp_path: Path) -> None:
    """The fp32 model here always says class 0 and the 'int8' file always says class 2; labels are 2."""
    def constant(cls: int) -> torch.nn.Module:
        m = vgg.build(TINY).eval()
        with torch.no_grad():
            last = m.classifier[-1]
            last.weight.zero_()
            last.bias.zero_()
            last.bias[cls] = 10.0
        return m

    fp32, other = constant(0), constant(2)
    ld = _loaders(labels=2)
    onnx_export.export_onnx(other, tmp_path / "int8.onnx", torch.randn(2, 3, 32, 32))
    art = Artifact(backend="test", file=tmp_path / "int8.onnx", onnx=tmp_path / "int8.onnx")
    info = RowInfo(dataset="t", compressor="quantization", config={}, seed=0, command="t")
    lat = timing.LatencyConfig(warmup=0, min_calls=1, max_calls=1, budget_s=0, batches=(1,), runtimes=("torch", "ort"))
    row, preds = harness.measure_row(Measurement(Subject(fp32, TINY, art, 32), lat, ld.test), info)
    assert row.accuracy == 1.0 and (preds == 2).all()
    assert row.lat(torch_eager.TORCH_CPU, 1) is None and row.lat(onnx_runtime.ORT_CPU, 1) is not None
    assert row.note(cuda.TORCH_CUDA) == "n/a (CPU int8 backend)"
    assert row.params == counting.count_params(fp32)[0] and row.env["dtype"] == "int8"


def test_torch_backend_is_dynamic_int8_and_reloads_with_weights_only(tiny: torch.nn.Module, tmp_path: Path) -> None:
    art = quantization(copy.deepcopy(tiny), TINY, QuantizationConfig(backend="torch"), _ctx(tmp_path))
    assert art.module is not None and "dynamic int8" in art.backend
    again = checkpoints.load_model(art.file)  # torch.load(weights_only=True) inside
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again.model(x), art.module(x))
        assert (again.model(x) - tiny(x)).abs().max() < 0.05  # close to fp32, not identical
    checkpoints.save_checkpoint(tiny, TINY, tmp_path / "fp32.pt")
    assert counting.file_size(art.file) < counting.file_size(tmp_path / "fp32.pt")


def test_calibration_with_too_few_images_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CompressError, match="--calibration-size must be at least 32 images, got 4"):
        QuantizationConfig(calibration_size=4)
    empty = DataLoader(TensorDataset(torch.zeros(0, 3, 32, 32), torch.zeros(0)), batch_size=8)
    with pytest.raises(CompressError, match="calibration needs 32 training images but the training split has 0"):
        calibration_batches(empty, 32)
    with pytest.raises(CompressError, match="needs 320 training images but the training split has 64"):
        quantization(vgg.build(TINY), TINY, QuantizationConfig(), _ctx(tmp_path))
    batches = calibration_batches(_loaders(n_train=64).train, 40)
    assert sum(len(b) for b in batches) == 40
