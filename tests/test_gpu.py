"""CUDA paths: they run where a GPU is (skip cleanly here), and the CPU fallbacks they imply run everywhere."""

from __future__ import annotations

import pytest
import torch

from compress.measuring.runtimes import cuda as cuda_runtime
from compress.measuring.runtimes import torch_eager
from compress.measuring.timing import LatencyConfig
from compress.models import vgg
from compress.session import pick_device
from compress.training.config import TrainConfig
from compress.training.loop import fit

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
SMALL = vgg.ModelSpec(num_classes=3, conv_widths=(8,) * 13, hidden=(16,))


def test_device_auto_is_cuda_exactly_when_there_is_one() -> None:
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@cuda
def test_gpu_latency_is_timed_with_synchronisation_and_named_by_device() -> None:
    cfg = LatencyConfig(warmup=1, min_calls=3, max_calls=3, budget_s=0.0, batches=(1, 4))
    out, note, peaks = cuda_runtime.gpu_latencies(vgg.build(SMALL), (3, 32, 32), cfg)
    assert set(out) == {1, 4} and all(v.median_ms > 0 for v in out.values())
    assert note == torch.cuda.get_device_name(0)
    weights_mib = sum(p.numel() * 4 for p in vgg.build(SMALL).parameters()) / 2**20
    assert set(peaks) == {1, 4} and weights_mib <= peaks[1].peak_mb <= peaks[4].peak_mb  # weights + activations


@cuda
def test_training_runs_on_cuda_and_returns_the_best_weights() -> None:
    from torch.utils.data import DataLoader, TensorDataset

    data = TensorDataset(torch.randn(8, 3, 32, 32), torch.randint(0, 3, (8,)))
    model = vgg.build(SMALL)
    result = fit(model, DataLoader(data, batch_size=4), DataLoader(data, batch_size=4), TrainConfig(epochs=1),
                 torch.device("cuda"))
    assert next(model.parameters()).is_cuda and len(result.history) == 1


@cuda
def test_cuda_out_of_memory_in_timing_is_a_note_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    def oom(*args: object, **kw: object) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")

    monkeypatch.setattr(torch_eager, "torch_latency", oom)
    out, note, peaks = cuda_runtime.gpu_latencies(vgg.build(SMALL), (3, 32, 32), LatencyConfig())
    assert out == {} and note == "n/a (CUDA out of memory)" and peaks == {}


@cuda
def test_gpu_speedups_are_paired_on_the_gpu_and_memory_is_the_models_own(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """time_cuda pairs a candidate with its reference on the GPU (as on the CPU) and reads the candidate's memory
    with the reference gone: a 4x wider reference must not raise the candidate's peak."""
    from compress.measuring.subject import Measurement, PairWith, Subject
    from compress.models.artifact import Artifact

    cfg = LatencyConfig(warmup=1, min_calls=3, max_calls=3, budget_s=0.0, batches=(1, 4), runtimes=("cuda",))
    small, wide = vgg.build(SMALL), vgg.build(vgg.ModelSpec(num_classes=3, conv_widths=(32,) * 13, hidden=(64,)))
    m = Measurement(Subject(small, SMALL, Artifact.fp32(small, tmp_path / "m.pt"), 32), cfg, pair=PairWith("base", wide))
    cuda_runtime.time_cuda(m)
    paired = m.timings.paired[cuda_runtime.TORCH_CUDA]
    assert set(paired) == {1, 4} and paired[1].reference_row_id == "base" and paired[4].ratio > 0
    alone = cuda_runtime.gpu_memory(small.cuda(), (3, 32, 32), (1, 4))
    assert m.timings.memory[cuda_runtime.TORCH_CUDA][4].peak_mb == pytest.approx(alone[4].peak_mb, rel=0.05)
