from __future__ import annotations

import itertools

import pytest
import torch

from compress import measure, models
from compress.measure import LatencyConfig


@pytest.mark.parametrize("spec", [
    models.ModelSpec(num_classes=10),
    models.ModelSpec(num_classes=10, hidden=(1024, 256)),
    models.ModelSpec(num_classes=10, head="gap", hidden=()),
    models.ModelSpec(arch="vgg16_bn", num_classes=3),
], ids=["vgg16", "slim-mlp", "slim-gap", "vgg16_bn"])
def test_thop_macs_match_torch_flop_counter(spec: models.ModelSpec) -> None:
    model = models.build(spec)
    shape = (3, 32, 32)
    macs = measure.count_macs(model, shape)
    flops = measure.count_flops(model, shape)
    assert abs(macs - flops / 2) / (flops / 2) < 0.01


def test_vgg16_macs_at_224_match_torchvision_published_figure() -> None:
    # torchvision's model card: 15.47 GFLOPS (MACs) for VGG16 at 224x224.
    macs = measure.count_macs(models.build(models.ModelSpec(num_classes=1000)), (3, 224, 224))
    assert abs(macs / 1e9 - 15.47) < 0.01


def test_count_params_sees_zeros() -> None:
    lin = torch.nn.Linear(10, 10)
    with torch.no_grad():
        lin.weight[:5].zero_()
    total, nonzero = measure.count_params(lin)
    assert total == 110 and nonzero == 110 - 50 - int((lin.bias == 0).sum())


def test_time_calls_statistics_and_noise_warning() -> None:
    durations = itertools.cycle([0.001, 0.001, 0.001, 0.004])
    cfg = LatencyConfig(warmup=2, min_calls=8, max_calls=8, budget_s=0.0)

    def fn() -> None:
        import time
        time.sleep(next(durations))

    lat = measure.time_calls(fn, cfg, batch=1)
    assert lat.calls == 8
    assert lat.median_ms < lat.p90_ms  # the slow calls sit in the tail
    assert lat.warning is not None and "IQR/median" in lat.warning
    steady = measure.time_calls(lambda: sum(range(20000)), LatencyConfig(warmup=1, min_calls=30, max_calls=30,
                                                                          budget_s=0.0), batch=1)
    assert steady.median_ms > 0 and steady.calls == 30


def test_gpu_column_says_why_when_there_is_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out, note = measure.gpu_latencies(torch.nn.Linear(2, 2), (2,), LatencyConfig())  # type: ignore[arg-type]
    assert out == {} and note == "n/a (no CUDA device on this machine)"


def test_cpu_latency_restores_thread_count() -> None:
    before = torch.get_num_threads()
    cfg = LatencyConfig(warmup=0, min_calls=2, max_calls=2, budget_s=0.0, batches=(1, 3), threads=1)
    out = measure.cpu_latencies(torch.nn.Conv2d(3, 4, 3), (3, 8, 8), cfg)
    assert set(out) == {1, 3} and out[3].batch == 3
    assert torch.get_num_threads() == before
