"""Per-layer sensitivity: zeroing filters is removing them, scans restore the model, guided amounts meet the MACs
target, bad per-layer files are one clear line, and the int8 scan names what it measured."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from compress.compressors.pruning import PruningConfig, _structured
from compress.errors import CompressError
from compress.models import vgg
from compress.sensitivity import pruning, scans
from compress.sensitivity.pruning import Costs
from compress.sensitivity.scans import Curve, PruningScan, ScanSettings
from tests.helpers import TINY
from tests.helpers import tiny_loaders as _loaders


@pytest.fixture(scope="module")
def tiny() -> nn.Module:
    torch.manual_seed(0)
    return vgg.build(TINY).eval()


def _with_bn() -> nn.Module:
    """A VGG-style net whose convolutions are followed by BatchNorm (zeroing must cover its scale and shift)."""
    torch.manual_seed(1)
    m = nn.Module()
    m.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                               nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
    m.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))
    m.forward = lambda x: m.classifier(m.features(x))  # type: ignore[method-assign]
    for bn in (m.features[1], m.features[4]):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.bias.data.uniform_(-1, 1)
    return m.eval()


@pytest.mark.parametrize("layer", [0, 5, 12])
def test_zeroing_the_lowest_l1_filters_is_exactly_torch_pruning_removing_them(tiny: nn.Module, layer: int) -> None:
    x = torch.randn(4, 3, 32, 32)
    name, conv, bn = pruning.convolutions(tiny)[layer]
    amounts = [0.0] * 13
    amounts[layer] = 0.5
    pruned, _ = _structured(copy.deepcopy(tiny), TINY, PruningConfig(amount=0.5, per_layer="x.json",
                                                                     layer_amounts=tuple(amounts),
                                                                     keep_classifier=True), 32)
    assert pruning.convolutions(pruned)[layer][1].out_channels == 8
    with torch.no_grad(), pruning._Zeroed(conv, bn, pruning.lowest_l1(conv)[:pruning.pruned_count(16, 0.5)]):
        masked = tiny(x)
    with torch.no_grad():
        assert torch.allclose(masked, pruned.eval()(x), atol=1e-5)
        assert not torch.allclose(masked, tiny(x), atol=1e-5)  # the zeroing did change the model


def test_zeroing_covers_batchnorm_so_the_channel_is_gone() -> None:
    net = _with_bn()
    x = torch.randn(2, 3, 8, 8)
    name, conv, bn = pruning.convolutions(net)[0]
    assert name == "features.0" and bn is net.features[1]
    idx = pruning.lowest_l1(conv)[:4]
    with torch.no_grad(), pruning._Zeroed(conv, bn, idx):
        after_relu = net.features[:3](x)
    assert float(after_relu[:, idx].abs().max()) == 0.0  # exactly what the next layer sees when they are removed


def test_a_scan_has_a_curve_per_convolution_and_leaves_the_model_as_it_was(tiny: nn.Module) -> None:
    before = copy.deepcopy(tiny.state_dict())
    base, curves = pruning.scan_pruning(tiny, _loaders(n_test=8).val, torch.device("cpu"), (0.3, 0.9),
                                            progress=lambda _: None)
    assert len(curves) == 13 and all(len(c.accuracy) == 2 and c.channels == 16 for c in curves)
    assert 0 <= base <= 1 and all(0 <= a <= 1 for c in curves for a in c.accuracy)
    assert all(torch.equal(before[k], v) for k, v in tiny.state_dict().items())


def _scan(sensitive: int, n: int = 13) -> PruningScan:
    """A made-up scan: every layer loses 1 point per 0.1 pruned, layer `sensitive` 20 points."""
    amounts = tuple(round(0.1 * i, 1) for i in range(1, 10))
    curves = tuple(Curve(f"features.{i}", 16, tuple(0.9 - (0.2 if i == sensitive else 0.01) * a * 10
                                                     for a in amounts)) for i in range(n))
    return PruningScan("digest", 100, 0.9, amounts, curves, 1.0)


def test_guided_amounts_spare_the_sensitive_layer_and_meet_uniform_macs(tiny: nn.Module) -> None:
    costs = Costs.of(tiny, 32)
    chosen = pruning.guided_amounts(_scan(sensitive=3), costs, target_amount=0.5, hidden_amount=0.5)
    assert list(chosen) == [f"features.{i}" for i in range(13)]
    assert chosen["features.3"] < min(v for k, v in chosen.items() if k != "features.3")
    keep = [(16 - pruning.pruned_count(16, a)) / 16 for a in chosen.values()]
    uniform = costs.macs([(16 - pruning.pruned_count(16, 0.5)) / 16] * 13, 0.5)
    assert costs.macs(keep, 0.5) <= uniform and costs.macs(keep, 0.5) > 0.9 * uniform
    # the price model is the real count: an unpruned allocation costs what thop counts
    from compress.measuring.counting import count_macs

    assert costs.macs([1.0] * 13, 1.0) == pytest.approx(count_macs(tiny, (3, 32, 32)), rel=1e-6)


@pytest.mark.parametrize("content, message", [
    ({"features.99": 0.5}, r"names layer\(s\) the model does not have: features.99; its convolutions are features.0"),
    ({"features.0": 1.5}, r"the amount of features.0 is 1.5; amounts must be numbers in \(0, 1\)"),
    ({"features.0": "half"}, r"the amount of features.0 is 'half'"),
    ([0.5], r"must hold a JSON object"),
])
def test_a_bad_per_layer_file_is_one_clear_error(tiny: nn.Module, tmp_path: Path, content: object,
                                                 message: str) -> None:
    path = tmp_path / "amounts.json"
    path.write_text(json.dumps(content))
    layers = [n for n, _, _ in pruning.convolutions(tiny)]
    with pytest.raises(CompressError, match=message):
        scans.read_per_layer_file(path, layers)
    with pytest.raises(CompressError, match="no such file"):
        scans.read_per_layer_file(tmp_path / "missing.json", layers)


def test_a_scan_of_other_weights_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pruning-x.json"
    scans.save(path, _scan(0))
    assert scans.load_pruning(path, "digest").curves[0].layer == "features.0"
    with pytest.raises(CompressError, match="made on other baseline weights"):
        scans.load_pruning(path, "another")
    with pytest.raises(CompressError, match="run `python -m compress sensitivity pruning` first"):
        scans.load_pruning(tmp_path / "none.json", "digest")
    path.write_text("{not json")
    with pytest.raises(CompressError, match="is damaged"):
        scans.load_pruning(path, "digest")


def test_int8_scan_measures_every_layer_on_the_validation_split(tiny: nn.Module) -> None:
    from compress.sensitivity import int8_layers

    scan = int8_layers.scan(tiny, _loaders(), ScanSettings(tolerance=1.0, calibration_size=32, threads=1), baseline="d", command="t",
                                 progress=lambda _: None)
    assert [x.op for x in scan.layers] == ["Conv"] * 13 + ["Gemm"] * 2
    # measured and finite; int8 of this very model: the first layer 20+ dB above its noise (37.8 dB here)
    assert all(x.sqnr_db == x.sqnr_db for x in scan.layers) and scan.layers[0].sqnr_db > 20
    assert all(0 <= x.alone_accuracy <= 1 for x in scan.layers)  # type: ignore[operator]
    assert set(scan.keep_fp32) <= {x.layer for x in scan.layers} and scan.val_images == 8
