"""The low-rank head: truncated SVD of the dense layers (Fast R-CNN's fc6 1024 / fc7 256), no training needed."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch

from compress.compressors import get
from compress.compressors.low_rank import LowRankConfig, _factors, low_rank, rank_for_energy
from compress.errors import CompressError
from compress.measuring import counting
from compress.models import vgg
from tests.helpers import compressor_ctx as _ctx

SMALL = vgg.ModelSpec(num_classes=10, conv_widths=tuple(w // 8 for w in vgg.VGG16_WIDTHS), hidden=(256, 128))


def test_full_rank_factors_reproduce_the_layer() -> None:
    torch.manual_seed(0)
    for shape in ((64, 200), (200, 64)):  # out <= in and out > in take the two Gram matrices
        w = torch.randn(*shape)
        a, b, _ = _factors(w, min(shape))
        assert torch.allclose(b @ a, w, atol=1e-4)


def test_the_factorised_model_matches_its_truncation_and_saves_what_arithmetic_says() -> None:
    torch.manual_seed(0)
    base = vgg.build(SMALL).eval()
    model, spec = low_rank(copy.deepcopy(base), SMALL, LowRankConfig(rank=(32, 16)), _ctx())
    in6 = 64 * 7 * 7  # 64 channels at 7x7 after the adaptive pool
    expected = counting.count_params(base)[0] - (in6 * 256 + 256 * 128) + (in6 * 32 + 32 * 256 + 256 * 16 + 16 * 128)
    assert spec.head_ranks == (32, 16, 0) and counting.count_params(model)[0] == expected
    rebuilt = vgg.build(spec)  # the spec describes the model: a checkpoint of it reloads
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(rebuilt.eval()(x), model.eval()(x))


def test_vgg16_default_ranks_are_fast_rcnns() -> None:
    """On VGG16's 4096-wide head the default is fc6 at rank 1024 and fc7 at 256; the class layer stays dense."""
    spec = vgg.ModelSpec(num_classes=10)
    model, new = get("low-rank").fn(vgg.build(spec), spec, LowRankConfig(), _ctx())
    assert new.head_ranks == (1024, 256, 0)
    head = sum(p.numel() for p in model.classifier.parameters())
    assert head == 25088 * 1024 + 1024 * 4096 + 4096 + 4096 * 256 + 256 * 4096 + 4096 + 4096 * 10 + 10


def test_energy_picks_the_documented_rank() -> None:
    """Singular values 4, 2, 1, 1 (squared: 16, 4, 1, 1 of 22): 72.7% at rank 1, 90.9% at 2, 95.5% at 3."""
    eig = torch.tensor([16.0, 4.0, 1.0, 1.0], dtype=torch.float64)
    assert [rank_for_energy(eig, e) for e in (0.5, 0.8, 0.9, 0.95, 1.0)] == [1, 2, 2, 3, 4]
    u, _ = torch.linalg.qr(torch.randn(6, 4, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(9, 4, dtype=torch.float64))
    w = (u @ torch.diag(torch.tensor([4.0, 2.0, 1.0, 1.0], dtype=torch.float64)) @ v.T).float()
    assert rank_for_energy(_factors(w, 1)[2], 0.9) == 2


@pytest.mark.parametrize("config,match", [
    (LowRankConfig(rank=(200, 120)), "rank 120 for classifier.3 (256 -> 128) saves no parameters"),
    (LowRankConfig(rank=(32,)), "--rank lists 1 rank(s) for 2 dense layer(s)"),
])
def test_a_rank_that_saves_nothing_is_refused(config: LowRankConfig, match: str) -> None:
    with pytest.raises(CompressError, match=re.escape(match)):
        low_rank(vgg.build(SMALL), SMALL, config, _ctx())


def test_bad_flags_are_one_line(tmp_path: Path) -> None:
    from tests.helpers import cli as _cli, one_line as _one_line

    for argv, match in ((["--rank", "0,4"], "--rank values must be positive"),
                        (["--energy", "1.5"], "--energy must be a share in (0, 1]"),
                        (["--rank", "4,4", "--energy", "0.9"], "--rank and --energy both choose the ranks")):
        code, _, err = _cli(["run", "low-rank", *argv, "--workdir", str(tmp_path / "runs")])
        _one_line(code, err, match)
