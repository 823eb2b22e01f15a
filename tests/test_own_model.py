"""Your own model as the baseline: a seed-004 `best_model.pth` on a folder of photos, end to end, and
every way that can go wrong answered in one line with nothing stored."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch

from compress.cli.main import main
from compress.measuring import counting
from compress.models import checkpoints, pretrained, vgg
from compress.store.sqlite import Store
from tests.conftest import QUICK_LATENCY
from tests.photos import photo_folder, save_seed004

SMALL = ["--image-size", "32", *QUICK_LATENCY]


def _run(argv: list[str]) -> tuple[int, list[dict]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, json.loads(out.getvalue()) if code == 0 and out.getvalue().strip() else []


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("own")
    return {"data": photo_folder(root / "PotatoPlants"), "weights": save_seed004(root / "best_model.pth"),
            "runs": root / "runs", "reports": root / "reports"}


def _where(own: dict[str, Path]) -> list[str]:
    return ["--data", str(own["data"]), "--baseline-weights", str(own["weights"]), "--workdir", str(own["runs"]),
            "--reports-dir", str(own["reports"]), "--json"]


def test_seed004_checkpoint_is_the_baseline_then_pruned_then_int8(own: dict[str, Path],
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, rows = _run(["run", "pruning", *_where(own), *SMALL, "--epochs", "1", "--batch-size", "8", "--runtimes", "torch,ort"])
    assert code == 0, capsys.readouterr().err
    base, pruned = rows
    err = capsys.readouterr().err
    assert "no baseline training" in err and "may be optimistic" in err  # the leakage note, at the prompt
    expected = counting.count_params(checkpoints.load_model(own["weights"]).model)[0]
    assert base["params"] == expected and base["train_seconds"] == 0.0 and base["best_epoch"] is None
    assert base["config"]["baseline"]["kind"] == "imported" and base["config"]["baseline"]["layout"] == "seed-004"
    assert base["config"]["data"]["normalization"] == "imagenet" and base["caveats"]
    assert pruned["baseline_row_id"] == base["row_id"] and pruned["params"] < base["params"]
    assert pruned["config"]["arch"] == "vgg16"

    code, rows = _run(["run", "quantization", "--from", pruned["row_id"], *_where(own), *SMALL, "--runtimes", "torch,ort",
                       "--calibration-size", "32"])
    assert code == 0, capsys.readouterr().err
    base2, int8 = rows
    assert "converted before" in capsys.readouterr().err  # cached by content hash: not converted again
    assert base2["config"]["baseline"]["sha256"] == base["config"]["baseline"]["sha256"]
    assert int8["params"] == pruned["params"] and int8["env"]["dtype"] == "int8"
    assert int8["source_row_id"] != pruned["row_id"]  # the pruned model, re-measured beside this baseline
    report = (own["reports"] / "PotatoPlants.md").read_text()
    assert "**Note** (baseline): imported baseline" in report
    assert "| pruning" in report and "| quantization" in report


def test_test_data_folder_is_the_test_split_and_lifts_the_leakage_note(own: dict[str, Path],
                                                                     tmp_path: Path) -> None:
    held_out = photo_folder(tmp_path / "held_out", per_class=4)
    code, rows = _run(["baseline", *_where(own), "--workdir", str(tmp_path / "runs"), "--test-data", str(held_out),
                       *SMALL])
    assert code == 0
    assert rows[0]["test_images"] == 12 and rows[0]["caveats"] == []


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], match: str, runs: Path) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("compress: error:") and match in err, err
    assert not (runs / "results.sqlite").exists() or not Store(runs / "results.sqlite").rows()
    assert not (runs / "splits").exists()  # nothing stored: not even the split


def test_bad_baselines_get_one_line_and_nothing_is_stored(own: dict[str, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    runs = tmp_path / "runs"
    where = ["--data", str(own["data"]), "--workdir", str(runs), "--reports-dir", str(tmp_path / "r"), *SMALL]
    five = save_seed004(tmp_path / "five.pth", classes=5)
    _fails(["run", "slim-head", "--baseline-weights", str(five), *where], capsys,
           "predicts 5 classes, but PotatoPlants has 3 (Early_blight, Late_blight, healthy)", runs)
    resnet = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(4, 3, 7, 7), "fc.weight": torch.zeros(3, 4)}, resnet)
    _fails(["run", "slim-head", "--baseline-weights", str(resnet), *where], capsys, "is not a VGG16 state dict", runs)
    broken = tmp_path / "broken.pth"
    broken.write_bytes(own["weights"].read_bytes()[:5000])
    _fails(["run", "slim-head", "--baseline-weights", str(broken), *where], capsys, "is not a PyTorch checkpoint", runs)
    _fails(["baseline", "--baseline-weights", str(own["weights"]), "--retrain", *where], capsys, "drop one", runs)
    _fails(["run", "slim-head", "--baseline-weights", str(own["weights"]), "--arch", "vgg16_bn", *where], capsys,
           "but --arch is vgg16_bn: pass --arch vgg16", runs)
    _fails(["run", "slim-head", "--baseline-weights", str(own["weights"]), "--pretrained", *where], capsys,
           "pass one of them", runs)
    _fails(["baseline", "--freeze-features", *where], capsys, "add --pretrained", runs)
    other = photo_folder(tmp_path / "other", classes=("Early_blight", "healthy", "mosaic"), per_class=2)
    _fails(["run", "slim-head", "--baseline-weights", str(own["weights"]), "--test-data", str(other), *where],
           capsys, "only in --data: Late_blight; only in --test-data: mosaic", runs)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    _fails(["run", "slim-head", "--pretrained", *where], capsys,
           f"Put torchvision's file vgg16-397923af.pth in {tmp_path / 'torch-home' / 'hub' / 'checkpoints'}", runs)


def test_pretrained_from_the_hub_cache_frozen_features(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--pretrained reads torchvision's file from $TORCH_HOME (random weights stand in for ImageNet's)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    hub = pretrained.hub_file("vgg16")
    hub.parent.mkdir(parents=True)
    torch.manual_seed(1)
    imagenet = vgg.build(vgg.ModelSpec(num_classes=1000)).state_dict()
    torch.save(imagenet, hub)
    data = photo_folder(tmp_path / "PotatoPlants", per_class=6)
    code, rows = _run(["baseline", "--pretrained", "--freeze-features", "--data", str(data), "--epochs", "1",
                       "--workdir", str(tmp_path / "runs"), "--reports-dir", str(tmp_path / "r"), "--json", *SMALL])
    assert code == 0
    row = rows[0]
    assert row["config"]["baseline"]["kind"] == "pretrained" and row["config"]["baseline"]["freeze_features"]
    assert row["config"]["data"]["normalization"] == "imagenet" and row["num_classes"] == 3
    trained = checkpoints.load_model(Path(row["model_path"])).model.state_dict()
    assert torch.equal(trained["features.0.weight"], imagenet["features.0.weight"])  # frozen: untouched
    assert torch.equal(trained["features.28.weight"], imagenet["features.28.weight"])
    assert trained["classifier.6.weight"].shape == (3, 4096)  # the seeds' replaced last layer
