from __future__ import annotations

import copy

import pytest
import torch

from compress import compressors
from compress.compressors.slim_head import SlimHeadConfig
from compress.errors import CompressError
from compress.measuring import counting
from compress.models import vgg
from tests.helpers import check_contract, contract_names
from tests.helpers import compressor_ctx as _ctx


@pytest.mark.parametrize("name", contract_names())
def test_every_compressor_keeps_the_output_shape_and_shrinks_something(name: str) -> None:
    check_contract(name)


def test_unknown_compressor_lists_the_valid_ones() -> None:
    with pytest.raises(CompressError, match="unknown compressor 'nope': choose one of .*slim-head"):
        compressors.get("nope")


def test_duplicate_registration_is_refused() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        compressors.register("slim-head", SlimHeadConfig)(lambda *a: a)  # type: ignore[arg-type,return-value]


@pytest.mark.parametrize("classes", [3, 10])
def test_slim_head_cuts(classes: int) -> None:
    spec = vgg.ModelSpec(num_classes=classes)
    model = vgg.build(spec)  # built once: initialising 134M weights is most of this test's time
    base = counting.count_params(model)[0]
    comp = compressors.get("slim-head")
    mlp, _ = comp.fn(copy.deepcopy(model), spec, SlimHeadConfig(), _ctx())
    gap, _ = comp.fn(copy.deepcopy(model), spec, SlimHeadConfig(head="gap"), _ctx())
    convs = 14_714_688  # VGG16's 13 convolutions
    assert counting.count_params(mlp)[0] == convs + 25088 * 1024 + 1024 + 1024 * 256 + 256 + 256 * classes + classes
    # Seed 004's 1024-256 head removes 69.7% (3 classes): 25088x1024 stays the biggest layer.
    assert 1 - counting.count_params(mlp)[0] / base > 0.69
    assert 1 - counting.count_params(gap)[0] / base > 0.85
    assert counting.count_macs(mlp, (3, 32, 32)) < counting.count_macs(model, (3, 32, 32))


def test_slim_head_keeps_the_convolution_weights() -> None:
    spec = vgg.ModelSpec(num_classes=10)
    base = vgg.build(spec)
    out, _ = compressors.get("slim-head").fn(copy.deepcopy(base), spec, SlimHeadConfig(), _ctx())
    for k, v in base.features.state_dict().items():
        assert torch.equal(v, out.features.state_dict()[k])


@pytest.mark.parametrize("kw,match", [({"hidden": (0, 5)}, "positive"), ({"dropout": 1.0}, "dropout")])
def test_slim_head_config_validation(kw: dict, match: str) -> None:
    with pytest.raises(CompressError, match=match):
        SlimHeadConfig(**kw)
