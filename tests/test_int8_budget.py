"""Int8 within an accuracy budget: the loop stops at the first model within D, gives up cleanly, ranks layers as
documented, calibrates once (the same ranges as per call), and NNCF's accuracy control returns what it kept."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from compress.compressors.quantization import QuantizationConfig, quantization
from compress.data.split import Loaders
from compress.errors import CompressError
from compress.measuring import onnx_export
from compress.models import vgg
from compress.int8 import budget
from compress.sensitivity import scans
from compress.sensitivity.scans import LayerError
from tests.conftest import QUICK_LATENCY
from tests.helpers import TINY
from tests.helpers import cli as _cli
from tests.helpers import int8_ctx as _ctx
from tests.helpers import narrow as _narrow
from tests.helpers import one_line as _one_line
from tests.helpers import tiny_loaders as _loaders


def _fake(drops: dict[int, float]):  # type: ignore[no-untyped-def]
    """A quantizer that records what it was asked and a scorer whose drop falls as layers go back to fp32."""
    asked: list[list[str]] = []

    def quantize(out: Path, kept: list[str]) -> None:
        asked.append(list(kept))

    def score(out: Path) -> float:
        return 0.9 - drops[len(asked[-1])] / 100
    return asked, quantize, score


def test_the_loop_stops_at_the_first_model_within_the_budget() -> None:
    asked, quantize, score = _fake({1: 3.0, 2: 1.2, 3: 0.4, 4: 0.1})
    got = budget.within(0.5, ["first"], lambda: ["a", "first", "b", "c"], budget.Tools(quantize, score, Path("x.onnx")),
                        0.9)
    assert asked == [["first"], ["first", "a"], ["first", "a", "b"]]  # "first" is already fp32: not added twice
    assert got.fp32_layers == ["first", "a", "b"] and [s.drop for s in got.steps] == [3.0, 1.2, 0.4]
    record = budget.record(got, "the stored scan")
    assert record["steps"][-1]["drop_points"] == 0.4 and record["order_from"] == "the stored scan"


def test_the_loop_gives_up_when_only_fp32_is_within() -> None:
    _, quantize, score = _fake({0: 5.0, 1: 4.0, 2: 3.0})
    with pytest.raises(CompressError, match="only the all-fp32 model is within the budget, so no int8 row is stored"):
        budget.within(0.5, [], lambda: ["a", "b", "c"], budget.Tools(quantize, score, Path("x.onnx")), 0.9)


def test_layers_are_ranked_by_accuracy_alone_then_sqnr() -> None:
    layers = (LayerError("a", "Conv", 30.0, 0.90), LayerError("b", "Conv", 12.0, 0.80), LayerError("c", "Conv", 8.0, 0.90),
              LayerError("d", "Gemm", float("nan"), 0.90))
    scan = scans.QuantizationScan("d", 8, 0.9, 0.8, layers, 1.0)
    assert scan.ranked() == ["b", "c", "a", "d"]


def test_calibrating_once_gives_the_ranges_of_calibrating_every_time(tmp_path: Path) -> None:
    """The quantized model for one exclusion set is the same whether its ranges were calibrated for it or read
    from the cache the full-int8 model's calibration left."""
    from compress.int8.calibration import calibration_batches
    from compress.int8.ort_qdq import Quantizer

    torch.manual_seed(0)
    model = vgg.build(TINY).eval()
    ld = _loaders()
    onnx_export.export_onnx(model, tmp_path / "m.onnx", next(iter(ld.val))[0])
    batches = calibration_batches(ld.train, 32)
    nodes = [n.name for n in onnx.load(str(tmp_path / "m.onnx")).graph.node if n.op_type == "Conv"]
    ranges = tmp_path / "ranges.json"
    Quantizer(tmp_path / "m.onnx", batches, ranges)(tmp_path / "all.onnx")  # calibrates, fills the cache
    assert ranges.exists()
    Quantizer(tmp_path / "m.onnx", batches, ranges)(tmp_path / "cached.onnx", nodes[:2])
    Quantizer(tmp_path / "m.onnx", batches, tmp_path / "other.json")(tmp_path / "fresh.onnx", nodes[:2])

    def scales(path: Path) -> dict[str, np.ndarray]:
        return {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer
                if "scale" in i.name}

    cached, fresh = scales(tmp_path / "cached.onnx"), scales(tmp_path / "fresh.onnx")
    assert cached.keys() == fresh.keys() and len(cached) > 10
    assert all(np.array_equal(cached[k], fresh[k]) for k in cached)


def test_a_stored_scan_of_other_weights_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "quantization-b.json"
    path.write_text(json.dumps({"baseline": "aaaa", "val_images": 8, "val_accuracy": 0.5, "int8_accuracy": 0.5,
                                "layers": [], "seconds": 1.0}))
    with pytest.raises(CompressError, match="made on other baseline weights"):
        scans.load_quantization(path, "bbbb")
    assert scans.load_quantization(tmp_path / "none.json", "bbbb") is None


def _outlier_model() -> torch.nn.Module:
    """Logits = each input channel's mean (the label is the brightest channel), computed through a tensor whose
    fourth channel is a constant 1e4: an activation range that int8 cannot share with values near 1."""
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(4, 3, 1), torch.nn.AdaptiveAvgPool2d(1),
                            torch.nn.Flatten(), torch.nn.Linear(3, 3))
    with torch.no_grad():
        for layer in (m[0], m[1], m[4]):
            layer.weight.zero_()
            layer.bias.zero_()
        for c in range(3):
            m[0].weight[c, c] = m[1].weight[c, c] = m[4].weight[c, c] = 1.0
        m[0].bias[3] = 1e4  # the outlier channel, which the next layer ignores: fp32 does not notice it
    return m.eval()


def _channel_data() -> Loaders:
    g = torch.Generator().manual_seed(0)

    def ds(n: int) -> TensorDataset:
        y = torch.randint(0, 3, (n,), generator=g)
        x = torch.randn(n, 3, 8, 8, generator=g) * 0.5
        x[torch.arange(n), y] += 1.0  # the label's channel is the brightest
        return TensorDataset(x, y)
    return Loaders(DataLoader(ds(64), batch_size=16), DataLoader(ds(24), batch_size=16), DataLoader(ds(24), batch_size=16))


def test_budgeted_int8_on_a_model_full_int8_breaks(tmp_path: Path) -> None:
    """Full int8 loses more than D on validation (the outlier channel's range flattens the others to zero); the
    loop puts layers back to fp32, in the order of a scan it runs itself, until the drop is within D."""
    model, ld = _outlier_model(), _channel_data()
    ctx = _ctx(tmp_path, ld)
    full = quantization(model, TINY, QuantizationConfig(calibration_size=32, keep_fp32="none", max_drop=100.0), ctx)
    assert full.facts["steps"][0]["fp32_layers"] == [] and len(full.facts["steps"]) == 1
    assert full.facts["order_from"] == "not needed: full int8 was within"
    assert full.facts["steps"][0]["drop_points"] > 20  # full int8 really breaks it
    within = quantization(model, TINY, QuantizationConfig(calibration_size=32, keep_fp32="none", max_drop=1.0), ctx)
    steps = within.facts["steps"]
    assert steps[0]["drop_points"] > 20 and steps[-1]["drop_points"] <= 1.0 and len(steps) >= 2
    assert 1 <= len(within.facts["fp32_layers"]) < 4  # some layers back in fp32, not all
    assert within.facts["order_from"].startswith("a scan of this model run here")


def test_max_drop_bad_input_is_one_line(tmp_path: Path) -> None:
    weights = str(_narrow(tmp_path / "n.pt"))
    base = ["run", "quantization", "--baseline-weights", weights, "--workdir", str(tmp_path / "runs"), *QUICK_LATENCY]
    for value, match in (("-1", "--max-drop must be a number of points from 0 to 100, got -1.0"),
                         ("nan", "not a finite number"), ("101", "from 0 to 100, got 101.0")):
        code, _, err = _cli([*base, "--max-drop", value])
        _one_line(code, err, match)
    code, _, err = _cli([*base, "--max-drop", "1", "--backend", "torch"])
    _one_line(code, err, "--backend torch is dynamic int8 of the Linear layers, with no such loop")


def test_nncf_accuracy_control_returns_a_model_and_the_layers_it_kept(tmp_path: Path) -> None:
    pytest.importorskip("nncf")
    torch.manual_seed(0)
    model = vgg.build(TINY).eval()
    art = quantization(model, TINY, QuantizationConfig(backend="openvino", calibration_size=32, max_drop=0.5),
                       _ctx(tmp_path))
    assert art.ir is not None and art.ir.exists() and art.facts["order_from"] == "NNCF's own ranking"
    assert isinstance(art.facts["fp32_layers"], list) and len(art.facts["fp32_layers"]) >= 2  # first and last
