"""Depthwise-separable conversion, the KD loss, students, and the control beside every KD row."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from compress import compressors
from compress.compressors import Context
from compress.compressors.depthwise import DepthwiseConfig
from compress.compressors.distillation import DistillationConfig
from compress.measuring import counting
from compress.models import checkpoints, vgg
from compress.training import kd
from compress.training.config import TrainConfig
from compress.training.kd import KD, kd_loss
from compress.training.loop import FitOptions, _train_epoch, fit, make_adam

SPEC = vgg.ModelSpec(num_classes=10)
LIGHT = vgg.ModelSpec(num_classes=10, head="gap", hidden=())  # VGG16's convolutions; a cheap head to build


def _ctx() -> Context:
    return Context(loaders=None, device=torch.device("cpu"), num_classes=10, image_size=32, run_dir=Path("unused"))


@pytest.mark.parametrize("keep_first", [False, True])
def test_depthwise_converts_every_conv_keeps_shapes_and_cuts_conv_macs_8x(keep_first: bool) -> None:
    base = vgg.build(LIGHT)
    model, spec = compressors.get("depthwise").fn(copy.deepcopy(base), LIGHT, DepthwiseConfig(keep_first=keep_first),
                                                  _ctx())
    x = torch.randn(2, 3, 32, 32)
    assert model.eval()(x).shape == (2, 10)
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    spatial = [c for c in convs if c.kernel_size == (3, 3)]
    assert len(spatial) == 13 and all(c.kernel_size == (1, 1) for c in convs if c not in spatial)
    depthwise = [c for c in spatial if c.groups == c.in_channels > 1 or (c.groups == 3 and c.in_channels == 3)]
    assert len(depthwise) == (12 if keep_first else 13)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.features) == (25 if keep_first else 26)
    ratio = counting.count_conv_macs(base, (3, 32, 32)) / counting.count_conv_macs(model, (3, 32, 32))
    assert ratio > 7  # MobileNet reports 8.6x for the same substitution
    vgg.build(spec).load_state_dict(model.state_dict())  # the spec rebuilds it


def test_depthwise_head_choices() -> None:
    small = vgg.ModelSpec(num_classes=10, hidden=(64, 64))
    keep, kspec = compressors.get("depthwise").fn(None, small, DepthwiseConfig(head="keep"), _ctx())
    mlp, spec = compressors.get("depthwise").fn(None, small, DepthwiseConfig(head="mlp", hidden=(32,)), _ctx())
    assert kspec.hidden == (64, 64) and kspec.head == "mlp" and spec.hidden == (32,)
    assert counting.count_params(mlp)[0] < counting.count_params(keep)[0]
    assert DepthwiseConfig(head="gap", hidden=(7,)).hidden == ()


def test_kd_loss_is_cross_entropy_when_alpha_selects_it() -> None:
    g = torch.Generator().manual_seed(0)
    s, t, y = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g), torch.randint(0, 5, (8,), generator=g)
    assert torch.allclose(kd_loss(s, t, y, KD(temperature=4, alpha=1.0)), F.cross_entropy(s, y))


def test_kd_term_has_zero_gradient_when_student_equals_teacher() -> None:
    g = torch.Generator().manual_seed(0)
    t, y = torch.randn(8, 5, generator=g) * 3, torch.randint(0, 5, (8,), generator=g)
    same = t.clone().requires_grad_()
    loss = kd_loss(same, t, y, KD(temperature=4, alpha=0.0))
    loss.backward()
    assert abs(loss.item()) < 1e-6 and same.grad.abs().max() < 1e-6
    other = (t + torch.randn(8, 5, generator=g)).requires_grad_()
    kd_loss(other, t, y, KD(temperature=4, alpha=0.0)).backward()
    assert other.grad.abs().max() > 1e-4  # the same check does fail when they differ


def test_kd_soft_term_is_scaled_by_t_squared() -> None:
    g = torch.Generator().manual_seed(1)
    s, t, y = torch.randn(16, 5, generator=g), torch.randn(16, 5, generator=g), torch.zeros(16, dtype=torch.long)
    kl = F.kl_div(F.log_softmax(s / 3, 1), F.softmax(t / 3, 1), reduction="batchmean")
    assert torch.allclose(kd_loss(s, t, y, KD(temperature=3, alpha=0.0)), 9 * kl, atol=1e-6)


@pytest.mark.parametrize("student", ["seed-student", "vgg11", "depthwise"])
def test_each_student_trains_one_step_from_cached_teacher_logits(student: str) -> None:
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(12, 3, 32, 32), torch.randint(0, 10, (12,)))
    loader = DataLoader(data, batch_size=6)
    teacher = vgg.build(vgg.ModelSpec(num_classes=10, conv_widths=(8,) * 13, hidden=(16,))).eval()
    cached = kd.with_teacher(loader, teacher, torch.device("cpu"), augment=False)
    x, y, t = next(iter(DataLoader(cached.dataset, batch_size=12)))
    with torch.no_grad():
        assert torch.allclose(t, teacher(x), atol=1e-5)  # the cache holds the teacher's logits for those images
    model, spec = compressors.get("distillation").fn(None, SPEC, DistillationConfig(student=student), _ctx())
    assert counting.count_params(model)[0] * 10 < 134_301_514  # VGG16 with 10 classes
    before = copy.deepcopy(model.state_dict())
    settings = KD()
    fit(model, cached, DataLoader(data, batch_size=6), TrainConfig(epochs=1, lr=1e-3), torch.device("cpu"),
        FitOptions(loss_fn=lambda s, y, t: kd_loss(s, t, y, settings)))
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    vgg.build(spec).load_state_dict(model.state_dict())


def test_the_control_is_the_same_config_without_the_teacher() -> None:
    assert DistillationConfig(student="vgg11").control() == DistillationConfig(student="vgg11", kd=False)
    assert DistillationConfig(kd=False).control() is None and DistillationConfig(kd=False).teacher is None
    assert DepthwiseConfig(kd=True).control() == DepthwiseConfig(kd=False)
    assert DepthwiseConfig().control() is None


def test_the_depthwise_row_states_its_block_but_offers_no_flag_for_it(capsys: pytest.CaptureFixture[str]) -> None:
    from dataclasses import asdict

    from compress.cli.main import main

    assert "pw1x1-BN-ReLU" in asdict(DepthwiseConfig(head="mlp"))["block"]
    with pytest.raises(SystemExit):
        main(["run", "depthwise", "--help"])
    out = capsys.readouterr().out
    assert "--kd" in out and "--keep-first" in out and "--block" not in out


ROUND_TRIPS = [("depthwise", DepthwiseConfig()), ("depthwise", DepthwiseConfig(keep_first=True, head="mlp",
                                                                                 hidden=(32,))),
               ("distillation", DistillationConfig(student="vgg11")),
               ("distillation", DistillationConfig(student="seed-student")),
               ("distillation", DistillationConfig(student="depthwise"))]


@pytest.mark.parametrize("name,config", ROUND_TRIPS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(ROUND_TRIPS)])
def test_saved_converted_models_and_students_load_with_identical_logits(name: str, config: object,
                                                                        tmp_path: Path) -> None:
    """Through a file, as the pipeline saves them and `load_model` reads them: same logits."""
    torch.manual_seed(0)
    model, spec = compressors.get(name).fn(None, SPEC, config, _ctx())
    model.eval()
    x = torch.randn(3, 3, 32, 32)
    checkpoints.save_checkpoint(model, spec, tmp_path / "model.pt")
    back = checkpoints.load_model(tmp_path / "model.pt")
    assert back.spec == spec
    with torch.no_grad():
        assert torch.equal(back.model.eval()(x), model(x))


def test_distilled_weights_depend_on_the_teacher_logits() -> None:
    """Two teachers, same student, data and seed: different weights. A loss that ignored the teacher would tie."""
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(12, 3, 32, 32), torch.randint(0, 10, (12,)))
    loader = DataLoader(data, batch_size=6)
    trained = []
    for teacher_seed in (1, 2):
        torch.manual_seed(teacher_seed)
        teacher = vgg.build(vgg.ModelSpec(num_classes=10, conv_widths=(8,) * 13, hidden=(16,))).eval()
        cached = kd.with_teacher(loader, teacher, torch.device("cpu"), augment=False)
        torch.manual_seed(0)
        student, _ = compressors.get("distillation").fn(None, SPEC, DistillationConfig(student="seed-student"),
                                                        _ctx())
        opt = make_adam(student, TrainConfig(lr=1e-3))
        # one epoch as fit runs it, without fit's best-epoch pick (which may hand back the starting weights)
        _train_epoch(student, cached, opt, lambda s, y, t: kd_loss(s, t, y, KD(alpha=0.0)),  # the soft term alone
                     torch.device("cpu"), "kd")
        trained.append(student.state_dict())
    assert any(not torch.equal(trained[0][k], trained[1][k]) for k in trained[0])
