from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from compress.measuring import counting, onnx_export, timing
from compress.measuring.runtimes import cuda, onnx_runtime, torch_eager
from compress.measuring.subject import Measurement, Subject, Timings
from compress.measuring.timing import LatencyConfig
from compress.models import vgg
from compress.models.artifact import Artifact
from compress.models.vgg import ModelSpec
from compress.store import rows


@pytest.mark.parametrize("spec", [
    vgg.ModelSpec(num_classes=10),
    vgg.ModelSpec(num_classes=10, hidden=(1024, 256)),
    vgg.ModelSpec(num_classes=10, head="gap", hidden=()),
    vgg.ModelSpec(arch="vgg16_bn", num_classes=3),
], ids=["vgg16", "slim-mlp", "slim-gap", "vgg16_bn"])
def test_thop_macs_match_torch_flop_counter(spec: vgg.ModelSpec) -> None:
    model = vgg.build(spec)
    shape = (3, 32, 32)
    macs = counting.count_macs(model, shape)
    flops = counting.count_flops(model, shape)
    assert abs(macs - flops / 2) / (flops / 2) < 0.01


def test_vgg16_macs_at_224_match_torchvision_published_figure() -> None:
    # torchvision's model card: 15.47 GFLOPS (MACs) for VGG16 at 224x224.
    macs = counting.count_macs(vgg.build(vgg.ModelSpec(num_classes=1000)), (3, 224, 224))
    assert abs(macs / 1e9 - 15.47) < 0.01


def test_count_params_sees_zeros() -> None:
    lin = torch.nn.Linear(10, 10)
    with torch.no_grad():
        lin.weight[:5].zero_()
    total, nonzero = counting.count_params(lin)
    assert total == 110 and nonzero == 110 - 50 - int((lin.bias == 0).sum())


def test_time_calls_statistics_and_noise_warning() -> None:
    durations = itertools.cycle([0.001, 0.001, 0.001, 0.004])
    cfg = LatencyConfig(warmup=2, min_calls=8, max_calls=8, budget_s=0.0)

    def fn() -> None:
        import time
        time.sleep(next(durations))

    lat = timing.time_calls(fn, cfg, batch=1)
    assert lat.calls == 8
    assert lat.median_ms < lat.p90_ms  # the slow calls sit in the tail
    assert lat.warning is not None and "IQR/median" in lat.warning


def test_a_steady_run_is_not_flagged_and_a_noisy_one_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """The flag is a property of the timings alone: driven by a fake clock, so machine load cannot sway it."""
    clock = {"now": 0.0}
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock["now"])

    def timed(durations: list[float]) -> rows.Latency:
        it = itertools.cycle(durations)

        def call() -> None:
            clock["now"] += next(it)
        return timing.time_calls(call, LatencyConfig(warmup=1, min_calls=40, max_calls=40, budget_s=0.0), batch=1)

    steady = timed([0.00200, 0.00201, 0.00199, 0.00202])  # 1% jitter
    assert steady.calls == 40 and steady.median_ms == pytest.approx(2.0, rel=0.01) and steady.warning is None
    noisy = timed([0.002, 0.002, 0.003, 0.004])  # IQR/median 0.5
    assert noisy.warning == "noisy: IQR/median = 0.50 > 0.1"


def test_time_calls_stops_slow_calls_at_max_s_with_five_calls_at_least() -> None:
    import time

    cfg = LatencyConfig(warmup=5, min_calls=20, max_calls=200, budget_s=0.05, max_s=0.2)
    calls = {"n": 0}

    def slow() -> None:  # 60 ms a call: 20 calls would take 1.2 s
        calls["n"] += 1
        time.sleep(0.06)

    lat = timing.time_calls(slow, cfg, batch=32)
    assert 5 <= lat.calls <= 6 and calls["n"] - lat.calls == 1  # warm-up cut to one call, timing to ~max_s


def test_threads_flag_is_what_pytorch_and_onnxruntime_run_with(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    class Probe(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(torch.get_num_threads())
            return x * 2

    cfg = LatencyConfig(warmup=0, min_calls=2, max_calls=2, budget_s=0.0, batches=(1,), threads=1)
    assert torch.get_num_threads() != 1  # the suite runs with 2, so 1 is a real change
    probe = Probe()
    torch_eager.time_eager(Measurement(Subject(probe, ModelSpec(), Artifact.fp32(probe, tmp_path / "p.pt"), 4),
                                       cfg))  # what every run does to time PyTorch on the CPU
    assert seen and set(seen) == {1}
    sessions: list[object] = []
    real = onnx_export.session
    monkeypatch.setattr(onnx_export, "session", lambda path, threads=None: sessions.append(real(path, threads))
                        or sessions[-1])
    onnx_export.export_onnx(torch.nn.Conv2d(3, 4, 3), tmp_path / "c.onnx", torch.randn(2, 3, 8, 8))
    sessions.clear()
    conv = torch.nn.Conv2d(3, 4, 3)
    onnx = Artifact(backend="onnx fp32", file=tmp_path / "c.onnx", onnx=tmp_path / "c.onnx", dtype="float32")
    onnx_runtime.time_ort(Measurement(Subject(conv, ModelSpec(), onnx, 8), replace(cfg, runtimes=("ort",))))
    opts = sessions[0].get_session_options()  # type: ignore[attr-defined]
    assert len(sessions) == 1 and opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1


def test_gpu_column_says_why_when_there_is_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out, note, _ = cuda.gpu_latencies(torch.nn.Linear(2, 2), (2,), LatencyConfig())  # type: ignore[arg-type]
    assert out == {} and note == "n/a (no CUDA device on this machine)"


def test_cpu_latency_restores_thread_count(tmp_path: Path) -> None:
    before = torch.get_num_threads()
    cfg = LatencyConfig(warmup=0, min_calls=2, max_calls=2, budget_s=0.0, batches=(1, 3), threads=1,
                        runtimes=("torch",))
    conv = torch.nn.Conv2d(3, 4, 3)
    timings = Timings({}, {})
    torch_eager.time_eager(Measurement(Subject(conv, ModelSpec(), Artifact.fp32(conv, tmp_path / "c.pt"), 8), cfg,
                                       timings=timings))
    out = timings.latency[torch_eager.TORCH_CPU]
    assert set(out) == {1, 3} and out[3].batch == 3
    assert torch.get_num_threads() == before
