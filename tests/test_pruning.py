from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from compress import compressors
from compress.compressors import Context
from compress.compressors.pruning import GLOBAL_MAX_RATIO, PruningConfig
from compress.errors import CompressError
from compress.measuring import counting
from compress.models import checkpoints, vgg

SHAPE = (3, 32, 32)


def _ctx() -> Context:
    return Context(loaders=None, device=torch.device("cpu"), num_classes=10, image_size=32, run_dir=Path("unused"))


@pytest.fixture(scope="module")
def base() -> tuple[nn.Module, vgg.ModelSpec]:
    torch.manual_seed(0)
    spec = vgg.ModelSpec(num_classes=10)
    return vgg.build(spec).eval(), spec


def _prune(base: tuple[nn.Module, vgg.ModelSpec], **kw: object) -> tuple[nn.Module, vgg.ModelSpec]:
    model, spec = base
    return compressors.get("pruning").fn(copy.deepcopy(model), spec, PruningConfig(**kw), _ctx())  # type: ignore[arg-type]


def _convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_uniform_l1_removes_the_lowest_l1_filters_and_their_inputs(base: tuple[nn.Module, vgg.ModelSpec]) -> None:
    pruned, spec = _prune(base, amount=0.3)
    widths = [c.out_channels for c in _convs(pruned)]
    assert widths == [int(w * (1 - 0.3)) for w in vgg.VGG16_WIDTHS]  # torch-pruning keeps floor(w (1 - A))
    assert spec.conv_widths == tuple(widths)
    convs = _convs(pruned)
    assert all(c.in_channels == p.out_channels for p, c in zip(convs, convs[1:]))  # dependents shrank too
    assert spec.hidden == (int(4096 * (1 - 0.3)),) * 2  # classifier hidden units pruned unless --keep-classifier
    # Li et al.: the filters kept in conv1 are exactly those with the largest L1 norms.
    w = _convs(base[0])[0].weight.detach()
    keep = set(torch.topk(w.abs().sum(dim=(1, 2, 3)), widths[0]).indices.tolist())
    kept_w = _convs(pruned)[0].weight.detach()
    assert {int(torch.where((w == k).all(dim=(1, 2, 3)))[0]) for k in kept_w} == keep


def test_structured_pruning_is_genuinely_smaller(base: tuple[nn.Module, vgg.ModelSpec], tmp_path: Path) -> None:
    model, spec = base
    pruned, new_spec = _prune(base, amount=0.3)
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        assert pruned(x).shape == model(x).shape
    assert counting.count_params(pruned)[0] < counting.count_params(model)[0]
    macs, base_macs = counting.count_macs(pruned, SHAPE), counting.count_macs(model, SHAPE)
    assert 1 - macs / base_macs >= 0.45  # inputs and outputs both shrink: ~(0.7)^2 of the conv MACs
    path = tmp_path / "pruned.pt"
    checkpoints.save_checkpoint(pruned, new_spec, path)
    back = checkpoints.load_model(path)
    with torch.no_grad():
        assert torch.equal(back.model.eval()(x), pruned(x))  # the spec rebuilds the pruned shapes exactly


def test_round_to_keeps_channel_counts_aligned(base: tuple[nn.Module, vgg.ModelSpec]) -> None:
    pruned, spec = _prune(base, amount=0.3, round_to=8)
    assert all(w % 8 == 0 for w in spec.conv_widths + spec.hidden)
    assert spec.conv_widths != vgg.VGG16_WIDTHS
    assert pruned(torch.randn(1, *SHAPE)).shape == (1, 10)


def test_keep_classifier_leaves_hidden_units(base: tuple[nn.Module, vgg.ModelSpec]) -> None:
    _, spec = _prune(base, amount=0.5, keep_classifier=True)
    assert spec.hidden == (4096, 4096) and spec.conv_widths[0] == 32


def test_random_control_picks_other_filters(base: tuple[nn.Module, vgg.ModelSpec]) -> None:
    torch.manual_seed(1)
    l1, _ = _prune(base, amount=0.5)
    rnd, _ = _prune(base, amount=0.5, importance="random")
    assert _convs(l1)[0].weight.shape == _convs(rnd)[0].weight.shape
    assert not torch.equal(_convs(l1)[0].weight, _convs(rnd)[0].weight)


def test_global_scope_never_empties_a_layer(base: tuple[nn.Module, vgg.ModelSpec]) -> None:
    pruned, spec = _prune(base, amount=0.8, scope="global")
    assert min(spec.conv_widths) >= 1
    total = sum(vgg.VGG16_WIDTHS)
    assert sum(spec.conv_widths) < total  # something was pruned
    assert pruned(torch.randn(1, *SHAPE)).shape == (1, 10)


def test_global_scope_caps_every_layer_at_ninety_percent(base: tuple[nn.Module, vgg.ModelSpec]) -> None:
    """A layer whose filters are nearly all small would be emptied by the global ranking: the cap stops it."""
    model, spec = base
    weak = copy.deepcopy(model)
    with torch.no_grad():
        _convs(weak)[4].weight[13:] *= 1e-4  # 243 of conv5's 256 filters near zero
    _, new_spec = compressors.get("pruning").fn(weak, spec, PruningConfig(amount=0.5, scope="global"), _ctx())
    assert new_spec.conv_widths[4] == 26  # exactly the cap: 10% of 256 kept, not the 13 the ranking wanted
    kept = [w / full for w, full in zip(new_spec.conv_widths, vgg.VGG16_WIDTHS)]
    assert min(kept) >= 1 - GLOBAL_MAX_RATIO - 1e-9
    assert 0.45 < 1 - sum(new_spec.conv_widths) / sum(vgg.VGG16_WIDTHS) < 0.55  # still about half overall


def test_unstructured_zeroes_weights_but_not_dense_cost(base: tuple[nn.Module, vgg.ModelSpec]) -> None:
    model, spec = base
    pruned, new_spec = _prune(base, amount=0.3, method="unstructured")
    # Fine-tuning happens with the masks on: a training step must not regrow the zeroed weights.
    opt = torch.optim.SGD(pruned.parameters(), lr=0.1)
    pruned.train()
    nn.functional.cross_entropy(pruned(torch.randn(4, *SHAPE)), torch.tensor([0, 1, 2, 3])).backward()
    opt.step()
    pruned = compressors.get("pruning").finalize(pruned.eval())  # type: ignore[misc]
    assert new_spec == spec
    total, nonzero = counting.count_params(pruned)
    assert total == counting.count_params(model)[0]
    assert 0.28 < 1 - nonzero / total < 0.31  # weights only: biases stay
    assert counting.count_macs(pruned, SHAPE) == counting.count_macs(model, SHAPE)
    assert not any(hasattr(m, "weight_orig") for m in pruned.modules())  # made permanent, no masks left


@pytest.mark.parametrize("amount", [0.0, 1.0, -0.2, 1.5])
def test_amount_outside_open_interval_is_rejected(amount: float) -> None:
    with pytest.raises(CompressError, match="--amount must be between 0 and 1"):
        PruningConfig(amount=amount)
    with pytest.raises(CompressError, match="--round-to must be >= 1"):
        PruningConfig(round_to=0)


def test_fast_l1_mask_is_torchs_l1_unstructured_mask() -> None:
    """The partition-based mask zeroes exactly the weights torch's topk-based L1Unstructured zeroes."""
    import torch
    from torch import nn
    from torch.nn.utils import prune

    from compress.compressors.pruning import l1_mask

    torch.manual_seed(0)
    for amount in (0.1, 0.5, 0.9):
        layer = nn.Linear(300, 200)
        prune.l1_unstructured(layer, "weight", amount=amount)
        assert torch.equal(l1_mask(layer.weight_orig, amount), layer.weight_mask)
    tied = torch.tensor([[0.0, 0.0, 0.0, 1.0, -1.0, 2.0]])  # ties at the threshold: exactly round(a * n) zeroed
    assert int((l1_mask(tied, 0.5) == 0).sum()) == 3 and l1_mask(tied, 0.5)[0, 5] == 1
