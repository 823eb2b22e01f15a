from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from compress.errors import CompressError
from compress.models import checkpoints, vgg
from tests.photos import Seed004VGG16


@pytest.mark.parametrize("classes,expected", [(3, 134_272_835), (2, 134_268_738), (17, 134_330_193)])
def test_baseline_parameter_counts_match_the_seeds(classes: int, expected: int) -> None:
    model = vgg.build(vgg.ModelSpec(num_classes=classes))
    assert sum(p.numel() for p in model.parameters()) == expected


def test_baseline_has_torchvision_layout() -> None:
    ours = vgg.build(vgg.ModelSpec(num_classes=3)).state_dict()
    ref = torchvision.models.vgg16(weights=None)
    ref.classifier[6] = nn.Linear(4096, 3)  # what the seeds do
    theirs = ref.state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in ours)


def test_vgg16_bn_layout() -> None:
    ours = vgg.build(vgg.ModelSpec(arch="vgg16_bn", num_classes=5)).state_dict()
    theirs = torchvision.models.vgg16_bn(weights=None, num_classes=5).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_seed004_layout_is_mapped_and_gives_the_same_logits(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = Seed004VGG16(3).eval()
    path = tmp_path / "best_model.pth"
    torch.save(src.state_dict(), path)
    imported = checkpoints.load_model(path)
    assert imported.layout == "seed-004" and imported.spec.num_classes == 3
    x = torch.randn(2, 3, 224, 224)  # 224: the seed's 7x7 flatten equals torchvision's avgpool there
    with torch.no_grad():
        assert torch.allclose(src(x), imported.model.eval()(x), atol=1e-5)


def test_torchvision_state_dict_with_dataparallel_prefix_loads(tmp_path: Path) -> None:
    ref = torchvision.models.vgg16(weights=None, num_classes=2)
    path = tmp_path / "model.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, path)
    imported = checkpoints.load_model(path)
    assert imported.layout == "torchvision" and imported.spec.num_classes == 2


def test_checkpoint_round_trip_gives_identical_logits(tmp_path: Path) -> None:
    spec = vgg.ModelSpec(num_classes=4, head="mlp", hidden=(64, 32))
    model = vgg.build(spec).eval()
    path = tmp_path / "m.pt"
    checkpoints.save_checkpoint(model, spec, path)
    back = checkpoints.load_model(path)
    assert back.spec == spec and back.layout == "compress"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), back.model.eval()(x))


def test_wrong_class_count_is_named(tmp_path: Path) -> None:
    path = tmp_path / "m.pth"
    torch.save(torchvision.models.vgg16(weights=None, num_classes=3).state_dict(), path)
    with pytest.raises(CompressError, match="trained for 3 classes, but --num-classes is 10"):
        checkpoints.load_model(path, num_classes=10)
    with pytest.raises(CompressError, match="is a vgg16 checkpoint.*--arch is vgg16_bn: pass --arch vgg16"):
        checkpoints.load_model(path, arch="vgg16_bn")


def test_checkpoint_that_fits_neither_layout_says_why(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(CompressError, match="not a VGG16 state dict.*conv1.weight"):
        checkpoints.load_model(path)
    sd = torchvision.models.vgg16(weights=None, num_classes=3).state_dict()
    del sd["features.28.bias"]
    torch.save(sd, path)
    with pytest.raises(CompressError, match=r"3 classes\): missing keys \['features.28.bias'\]"):
        checkpoints.load_model(path)


def test_pickled_full_model_is_refused_unless_trusted(tmp_path: Path) -> None:
    path = tmp_path / "full.pth"
    torch.save(vgg.build(vgg.ModelSpec(num_classes=3)), path)
    with pytest.raises(CompressError, match="--trust-pickle"):
        checkpoints.load_model(path)
    assert checkpoints.load_model(path, trust_pickle=True).spec.num_classes == 3


@pytest.mark.parametrize("content,match", [(None, "does not exist"), (b"not a checkpoint", "not a PyTorch checkpoint")])
def test_bad_files(tmp_path: Path, content: bytes | None, match: str) -> None:
    path = tmp_path / "x.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CompressError, match=match):
        checkpoints.load_model(path)
    with pytest.raises(CompressError, match="not a file"):
        checkpoints.load_model(tmp_path)
