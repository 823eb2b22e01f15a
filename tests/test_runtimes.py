"""The runtimes beyond PyTorch eager and ONNX Runtime: OpenVINO (fp32 and NNCF int8), torch.compile, fp16/bf16.

Each is checked the way ONNX Runtime is: parity with PyTorch before a figure is taken, the
failure path, accuracy from the model that runs there, and `n/a` with a reason instead of a crash.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from compress.cli.main import main
from compress.compressors import get
from compress.compressors.precision import PrecisionConfig
from compress.compressors.quantization import QuantizationConfig, quantization
from compress.errors import CompressError
from compress.measuring import counting, harness, onnx_export, timing
from compress.measuring.runtimes import cuda, onnx_runtime, openvino_cpu, torch_compile, torch_eager
from compress.measuring.subject import Measurement, RowInfo, Subject, Timings
from compress.models.artifact import Artifact
from compress.models.vgg import Cast
from tests.helpers import TINY
from tests.helpers import int8_ctx as _ctx
from tests.helpers import tiny_loaders as _loaders

ONE_CALL = dict(warmup=0, min_calls=1, max_calls=1, budget_s=0, batches=(1,))
INFO = RowInfo(dataset="t", compressor="t", config={}, seed=0, command="t")


@pytest.fixture(scope="module")
def tiny() -> nn.Module:
    torch.manual_seed(0)
    from compress.models import vgg

    return vgg.build(TINY).eval()


def test_unknown_runtime_is_one_line_naming_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CompressError, match="unknown runtime.*tensorrt; choose from torch, compile, ort, openvino, cuda"):
        timing.LatencyConfig(runtimes=("torch", "tensorrt"))
    assert main(["run", "slim-head", "--runtimes", "torch,tensorrt"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tensorrt" in err[0]


def test_default_runtimes_keep_the_old_cost() -> None:
    cfg = timing.LatencyConfig()
    assert cfg.on(torch_eager.TORCH_CPU) and cfg.on(onnx_runtime.ORT_CPU) and cfg.on(cuda.TORCH_CUDA)
    assert not cfg.on(openvino_cpu.OPENVINO_CPU) and not cfg.on(torch_compile.COMPILE_CPU)
    assert timing.LatencyConfig(runtimes=("openvino",)).onnx  # OpenVINO reads the parity-checked ONNX export


def test_openvino_fp32_reproduces_pytorch_and_is_timed(tiny: nn.Module, tmp_path: Path) -> None:
    x = torch.randn(8, 3, 32, 32)
    onnx_export.export_onnx(tiny, tmp_path / "m.onnx", x)
    compiled = openvino_cpu.checked(tiny, tmp_path / "m.onnx", 1, 3, x)  # what is timed: batch 3, static
    shape = compiled.input(0).get_partial_shape()
    assert shape.is_static and shape[0].get_length() == 3  # read back from the compiled model, not the hint
    assert compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"
    cfg = timing.LatencyConfig(**ONE_CALL, threads=1, runtimes=("openvino",))
    timings = Timings({}, {})  # the harness's own path: parity check, then timing
    openvino_cpu.time_openvino(Measurement(Subject(tiny, TINY, Artifact.fp32(tiny, tmp_path / "m.pt"), 32), cfg,
                                           keep_onnx=tmp_path / "m.onnx", timings=timings))
    lat = timings.latency[openvino_cpu.OPENVINO_CPU]
    assert lat[1].median_ms > 0 and lat[1].calls == 1
    assert "'INFERENCE_PRECISION_HINT': 'f32'" in timings.notes[openvino_cpu.OPENVINO_CPU]
    # fp32 means fp32: OpenVINO's default on CPUs with bf16 would run this "fp32" model in bf16
    assert openvino_cpu.settings(1)["INFERENCE_PRECISION_HINT"] == "f32"


def test_openvino_that_disagrees_with_pytorch_is_refused(tiny: nn.Module, tmp_path: Path) -> None:
    x = torch.randn(4, 3, 32, 32)
    onnx_export.export_onnx(tiny, tmp_path / "m.onnx", x)
    other = copy.deepcopy(tiny)
    with torch.no_grad():
        other.classifier[-1].bias += 1.0
    with pytest.raises(CompressError, match=r"batch-1 model does not reproduce PyTorch: max \|OpenVINO - PyTorch\| = 1"):
        openvino_cpu.checked(other, tmp_path / "m.onnx", 1, 1, x)  # the batch-1 compile that would be timed
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(CompressError, match="OpenVINO cannot compile .*bad.onnx"):
        openvino_cpu.compile_file(tmp_path / "bad.onnx", 1)


def test_a_missing_or_failing_runtime_is_na_with_its_reason_not_a_crash(
        tiny: nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openvino_cpu, "missing", lambda: "OpenVINO is not installed (openvino): pip install openvino")

    def broken(model: nn.Module, **kw: object) -> object:
        def fail(x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("InductorError: no working C++ compiler found\nlong trace")
        return fail

    monkeypatch.setattr(torch_compile.torch, "compile", broken)
    cfg = timing.LatencyConfig(**ONE_CALL, runtimes=("torch", "openvino", "compile"))
    subject = Subject(tiny, TINY, Artifact.fp32(tiny, tmp_path / "m.pt"), 32)
    (tmp_path / "m.pt").write_bytes(b"x")
    row, _ = harness.measure_row(Measurement(subject, cfg, _loaders().test), INFO)
    assert row.lat(torch_eager.TORCH_CPU, 1) is not None and row.accuracy is not None
    assert row.lat(openvino_cpu.OPENVINO_CPU, 1) is None and row.lat(torch_compile.COMPILE_CPU, 1) is None
    assert row.note(openvino_cpu.OPENVINO_CPU) == "n/a (OpenVINO is not installed (openvino): pip install openvino)"
    assert row.note(torch_compile.COMPILE_CPU) == \
        "n/a (torch.compile failed (RuntimeError: InductorError: no working C++ compiler found))"


def test_torch_compile_is_checked_against_eager_and_compile_time_kept_apart(tiny: nn.Module) -> None:
    c = torch_compile.Compiled(tiny, (3, 32, 32))
    assert c.check(torch.randn(2, 3, 32, 32)) <= torch_compile.PARITY_ATOL
    run = c.runner(2)  # the parity batch: compiled already, not again
    assert run().shape == (2, 4) and set(c.compile_s) == {2} and c.compile_s[2] > 0
    assert "compile time (not in the latency): b2" in c.note()
    torch._dynamo.reset()


def test_every_compiled_batch_size_is_checked_before_it_is_timed(tiny: nn.Module,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """dynamic=False compiles one graph per batch size: the batch-1 graph that is timed is checked on real images
    too, not only the parity batch's (a graph wrong at batch 1 alone is refused)."""
    c = torch_compile.Compiled(tiny, (3, 32, 32))
    c.check(torch.randn(4, 3, 32, 32))
    real = c._call
    monkeypatch.setattr(c, "_call", lambda x: real(x) + (1.0 if len(x) == 1 else 0.0))
    with pytest.raises(CompressError, match="torch.compile does not reproduce eager PyTorch"):
        c.runner(1)
    torch._dynamo.reset()


def _overflow_model() -> nn.Module:
    """fp32 says class 1 (logit 1e-8 above class 0); in fp16 1e-8 underflows to 0, so the tie goes to class 0."""
    m = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 2))
    with torch.no_grad():
        m[1].weight.zero_()
        m[1].bias.copy_(torch.tensor([0.0, 1e-8]))
    return m.eval()


def test_fp16_accuracy_is_the_fp16_models_own(tmp_path: Path) -> None:
    fp32 = _overflow_model()
    ld = _loaders(labels=0)
    art = get("precision").fn(copy.deepcopy(fp32), TINY, PrecisionConfig("fp16"), _ctx(tmp_path, ld))
    assert isinstance(art, Artifact) and art.dtype == "float16" and isinstance(art.module, Cast)
    assert all(p.dtype == torch.float16 for p in art.module.parameters())
    saved = torch.load(art.file, weights_only=True)["state_dict"]
    assert all(v.dtype == torch.float16 for v in saved.values())  # half the bytes on disk
    cfg = timing.LatencyConfig(**ONE_CALL, runtimes=("torch", "ort"))
    row, preds = harness.measure_row(Measurement(Subject(fp32, TINY, art, 32), cfg, ld.test), INFO)
    with torch.no_grad():
        assert (fp32(next(iter(ld.test))[0]).argmax(1) == 1).all()  # fp32 would score 0%
    assert (preds == 0).all() and row.accuracy == 1.0 and row.env["dtype"] == "float16"
    assert row.note(onnx_runtime.ORT_CPU).startswith("n/a (the model is pytorch fp16")


def test_bf16_runs_stays_close_to_fp32_and_reloads_as_bf16_only_where_asked(tiny: nn.Module, tmp_path: Path) -> None:
    from compress.models import checkpoints

    art = get("precision").fn(copy.deepcopy(tiny), TINY, PrecisionConfig("bf16"), _ctx(tmp_path))
    half = art.module
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        out, ref = half(x), tiny(x)
    assert out.dtype == torch.float32 and next(half.parameters()).dtype == torch.bfloat16
    assert 0 < float((out - ref).abs().max()) < 0.1 * float(ref.abs().max())
    with pytest.raises(CompressError, match="is a bf16 checkpoint .* cannot be a baseline"):
        checkpoints.load_model(art.file)  # never silently an fp32 model
    again = checkpoints.load_model(art.file, half=True).model  # `compress measure` and the benchmarks
    with torch.no_grad():
        assert isinstance(again, Cast) and torch.equal(again(x), out)


def test_nncf_int8_accuracy_comes_from_the_openvino_int8_model(tiny: nn.Module, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The same trick as ONNX Runtime's test: fp32 always says class 0, the IR always says class 2, labels are 2;
    and what OpenVINO compiles to time is the IR, never the fp32 ONNX file it was made from."""
    timed: list[Path] = []
    real_checked = openvino_cpu.checked
    monkeypatch.setattr(openvino_cpu, "checked", lambda model, path, *a: timed.append(Path(path)) or
                        real_checked(model, path, *a))
    def constant(cls: int) -> nn.Module:
        m = copy.deepcopy(tiny)
        with torch.no_grad():
            m.classifier[-1].weight.zero_()
            m.classifier[-1].bias.zero_()
            m.classifier[-1].bias[cls] = 10.0
        return m

    ld = _loaders(labels=2)
    art = quantization(constant(2), TINY, QuantizationConfig(backend="openvino", calibration_size=32),
                       _ctx(tmp_path, ld))
    assert art.ir is not None and art.ir.suffix == ".xml" and art.onnx is None and art.module is None
    assert counting.file_size(art.ir) < 0.5 * counting.file_size(art.fp32_onnx)  # .xml + .bin, int8 weights
    import openvino as ov

    ops = {op.get_type_name() for op in ov.Core().read_model(str(art.ir)).get_ordered_ops()}
    assert "FakeQuantize" in ops or "FakeConvert" in ops  # NNCF's int8 marks
    cfg = timing.LatencyConfig(**ONE_CALL, runtimes=("torch", "ort", "openvino"))
    row, preds = harness.measure_row(Measurement(Subject(constant(0), TINY, art, 32), cfg, ld.test), INFO)
    assert row.accuracy == 1.0 and (preds == 2).all()
    assert row.lat(openvino_cpu.OPENVINO_CPU, 1) is not None and row.lat(onnx_runtime.ORT_CPU, 1) is None
    assert row.lat(torch_eager.TORCH_CPU, 1) is None and row.size_bytes == counting.file_size(art.ir)
    assert timed and set(timed) == {art.ir}


def test_nncf_keeps_the_first_and_last_layer_in_fp32_like_onnxruntime(tiny: nn.Module, tmp_path: Path) -> None:
    import openvino as ov

    art = quantization(copy.deepcopy(tiny), TINY, QuantizationConfig(backend="openvino", calibration_size=32),
                       _ctx(tmp_path))
    model = ov.Core().read_model(str(art.ir))
    # an int8 weight reaches its layer through a dequantizing Multiply; an fp32 weight is a plain Constant
    weights = [op.input(1).get_source_output().get_node().get_type_name() for op in model.get_ordered_ops()
               if op.get_type_name() in ("Convolution", "MatMul")]
    assert weights == ["Constant"] + ["Multiply"] * (len(weights) - 2) + ["Constant"]
    out = openvino_cpu.logits(openvino_cpu.compile_file(art.ir, 1), np.zeros((2, 3, 32, 32), np.float32))
    assert out.shape == (2, 4)


TOY_RUNTIME = '''
from compress.measuring.runtimes._registry import register

TOY_CPU = "toy"


@register(TOY_CPU, "Toy runtime (CPU)", order=60, help="a runtime written by a test")
def time_toy(m):
    """Times a trivial call per batch: enough to show where its figures land."""
    m.time(TOY_CPU, lambda batch: (lambda: sum(range(100 * batch))), None)
'''


@pytest.fixture
def toy_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A runtime module in a folder of its own, on the runtimes package's path; the registry restored afterwards."""
    import sys

    from compress.measuring import runtimes
    from compress.measuring.runtimes import _registry

    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "toy_runtime.py").write_text(TOY_RUNTIME)
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))
    monkeypatch.setattr(_registry, "_SEARCHED", set(_registry._SEARCHED))
    monkeypatch.setattr(runtimes, "__path__", [*runtimes.__path__, str(folder)])
    yield "toy"
    sys.modules.pop("compress.measuring.runtimes.toy_runtime", None)


def test_a_new_module_is_a_new_runtime_everywhere(toy_runtime: str, tiny: nn.Module, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """One file in the runtimes folder: --runtimes offers it, the harness times it, the row and the report show it."""
    from compress.measuring import runtimes
    from compress.reporting import markdown

    with pytest.raises(SystemExit):
        main(["run", "slim-head", "--help"])
    assert "toy (a runtime written by a test)" in " ".join(capsys.readouterr().out.split())
    cfg = timing.LatencyConfig(**ONE_CALL, runtimes=("torch", "toy"))
    assert cfg.on(toy_runtime) and runtimes.label(toy_runtime) == "toy"
    ld = _loaders()
    rows = []
    for name in ("baseline", "t"):
        (tmp_path / f"{name}.pt").write_bytes(b"x")
        subject = Subject(tiny, TINY, Artifact.fp32(tiny, tmp_path / f"{name}.pt"), 32)
        info = RowInfo(dataset="t", compressor=name, config={}, seed=0, command="t",
                       baseline_row_id=rows[0].row_id if rows else None)
        rows.append(harness.measure_row(Measurement(subject, cfg, ld.test), info)[0])
    assert rows[1].lat(toy_runtime, 1) is not None and rows[1].lat(toy_runtime, 1).calls == 1
    progress = capsys.readouterr().err  # where each model's measuring time went, by phase
    first = progress.split("measured model in ")[1].splitlines()[0]
    assert "torch " in first and "scoring " in first
    text = markdown.render("t", rows, batch=1)  # timed at batch 1 only
    assert "toy b1 ms" in text and "Toy runtime (CPU)" in text
