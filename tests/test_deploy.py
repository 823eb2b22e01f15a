"""Ship what you measured: run -> export -> predict.py where torch and compress cannot be imported, and the
bundle's answers are the harness's, image for image (fp32, int8 ONNX Runtime, int8 OpenVINO)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compress.cli.main import main
from compress.deploy import preprocess
from compress.deploy.bundle import sha256
from tests.photos import Seed004VGG16

CLASSES = ("Early blight", "Gesund é", "Späte Fäule")  # spaces and non-ASCII letters
MODES = ("RGB", "L", "P", "RGBA", "CMYK", "I;16")
FAST = ["--latency-warmup", "0", "--latency-min-calls", "1", "--latency-max-calls", "1", "--latency-budget-s", "0",
        "--latency-max-s", "0.001", "--latency-batches", "1,32", "--no-memory"]
BLOCK = """import importlib.abc, sys
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "compress", "nncf"):
            raise ImportError(f"{name} cannot be imported here (a deploy machine)")
sys.meta_path.insert(0, _NoTorch())
"""


def _photo(mode: str, size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (size[1] // 4 + 1, size[0] // 4 + 1, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize(size, Image.BILINEAR)  # smooth: a photo, not noise
    if mode == "P":
        return img.convert("P", palette=Image.Palette.ADAPTIVE)
    if mode == "I;16":
        return Image.fromarray(np.asarray(img.convert("L"), dtype=np.uint16) * 257)
    return img.convert(mode)


def make_photos(root: Path, per_class: int = 18) -> Path:
    """Each class: photos in every mode Pillow opens here, of several sizes, .JPG and .png alike."""
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            mode = MODES[i % len(MODES)]
            ext = ".JPG" if mode in ("RGB", "L", "CMYK") else ".png"
            _photo(mode, (40 + 7 * i, 36 + 5 * c), 100 * c + i).save(root / name / f"{i:02d}{ext}")
    return root


def sensitive_model() -> torch.nn.Module:
    """A narrow 32 px VGG16 in seed 004's layout whose answers depend on the pixels (He init, zero bias, a seed
    that splits the made photos between classes): a constant model would hide a preprocessing that differs."""
    torch.manual_seed(1)
    model = Seed004VGG16(len(CLASSES), div=8, side=1)
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            torch.nn.init.zeros_(m.bias)
    return model


def _cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A workdir with three rows of one narrow 32 px VGG16 (your weights, no training): its fp32 baseline, its
    int8 ONNX Runtime model and its int8 OpenVINO (NNCF) model, all scored on a made folder of photos."""
    d = tmp_path_factory.mktemp("deploy")
    photos = make_photos(d / "photos")
    weights = d / "best_model.pth"
    torch.save(sensitive_model().state_dict(), weights)
    common = ["--baseline-weights", str(weights), "--data", str(photos), "--image-size", "32", "--workdir",
              str(d / "runs"), "--reports-dir", str(d / "reports"), "--json", *FAST]
    rows = {}
    for key, extra in (("int8", ["--runtimes", "ort"]), ("openvino", ["--backend", "openvino", "--runtimes",
                                                                       "openvino"])):
        code, out, err = _cli(["run", "quantization", "--calibration-size", "32", *extra, *common])
        assert code == 0, err
        base, rows[key] = json.loads(out)
        rows["fp32"] = base
    return {"dir": d, "photos": photos, "runs": d / "runs", "rows": rows, "weights": weights}


def _export(made: dict, key: str, out: Path, *extra: str) -> dict:
    row = made["rows"][key]
    code, _, err = _cli(["export", row["row_id"], "--out", str(out), "--workdir", str(made["runs"]), *extra])
    assert code == 0, err
    return json.loads((out / "bundle.json").read_text(encoding="utf-8"))


def _predict_py(bundle: Path, args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    """predict.py as a deploy machine runs it: torch and compress cannot be imported."""
    block = tmp / "block"
    block.mkdir(exist_ok=True)
    (block / "sitecustomize.py").write_text(BLOCK)
    env = {**os.environ, "PYTHONPATH": str(block)}
    return subprocess.run([sys.executable, str(bundle / "predict.py"), *args], capture_output=True, text=True,
                          env=env, cwd=tmp, timeout=120)


@pytest.mark.parametrize("key", ["fp32", "fp32-openvino", "int8", "openvino"])
def test_the_bundle_answers_each_test_image_as_the_harness_did(key: str, made: dict, tmp_path: Path) -> None:
    as_ir = key == "fp32-openvino"  # the fp32 row as an OpenVINO IR, fp32 weights kept
    key = "fp32" if as_ir else key
    manifest = _export(made, key, tmp_path / "bundle", *(["--format", "openvino"] if as_ir else []))
    row = made["rows"][key]
    run_dir = made["runs"] / row["dataset"] / row["compressor"] / row["row_id"]
    want = np.load(run_dir / "predictions.npy")
    files = [str(made["photos"] / t["file"]) for t in manifest["test_files"]]
    assert len(files) == row["test_images"] > 5 and {Path(f).suffix for f in files} >= {".JPG", ".png"}
    done = _predict_py(tmp_path / "bundle", [*files, "--json", "--top-k", "2"], tmp_path)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert [g["index"] for g in got] == want.tolist()  # the harness's classes, image for image
    assert len(set(want.tolist())) > 1  # the model's answer depends on the pixels: the check can fail
    assert all(g["label"] == CLASSES[g["index"]] and len(g["topk"]) == 2 for g in got)
    assert manifest["classes"] == list(CLASSES) and manifest["preprocessing"]["image_size"] == 32
    assert manifest["agreement"]["runner"]["same_answers"] == row["test_images"]
    measured = Path(row["model_path"])
    if as_ir:
        import openvino as ov

        ir = ov.Core().read_model(str(tmp_path / "bundle" / "model.xml"))
        assert manifest["model"]["runtimes"] == ["openvino"] and manifest["agreement"]["top1_agreement"] == 1.0
        assert json.loads(ir.get_rt_info(["model_info", "labels_json"]).astype(str)) == list(CLASSES)
        assert all(str(c.get_element_type()) != "f16" for c in ir.get_ordered_ops() if c.get_type_name() == "Constant")
    elif key == "fp32":
        assert manifest["agreement"]["top1_agreement"] == 1.0 and manifest["model"]["file"] == "model.onnx"
        import onnx

        props = {p.key: p.value for p in onnx.load(str(tmp_path / "bundle" / "model.onnx")).metadata_props}
        assert json.loads(props["compress.classes"]) == list(CLASSES)
        assert json.loads(props["compress.preprocessing"])["normalization"] == "imagenet"
    else:  # an int8 row ships the very file that was measured
        shipped = tmp_path / "bundle" / manifest["model"]["file"]
        assert sha256(shipped) == sha256(measured) == manifest["files"][manifest["model"]["file"]]


def test_a_changed_bundle_is_refused_and_a_bad_image_is_named(made: dict, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    _export(made, "int8", bundle)
    photos = made["photos"] / CLASSES[1]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    done = _predict_py(bundle, [str(photos), str(broken), "--csv"], tmp_path)
    assert done.returncode == 1  # one image failed, the others were predicted
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 + 18 + 1 and "broken.png" in done.stderr and lines[-1].startswith(str(broken))
    in_process = _cli(["predict", str(bundle), str(photos), "--csv"])
    assert in_process[0] == 0
    assert in_process[1].splitlines() == _predict_py(bundle, [str(photos), "--csv"], tmp_path).stdout.splitlines()
    with open(bundle / "model.onnx", "r+b") as fh:  # one byte changed in the weights
        fh.seek(-10, os.SEEK_END)
        byte = fh.read(1)
        fh.seek(-10, os.SEEK_END)
        fh.write(bytes([byte[0] ^ 1]))
    done = _predict_py(bundle, [str(photos)], tmp_path)
    assert done.returncode == 2 and "model.onnx was changed after export" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not done.stdout


def test_verify_re_checks_the_figures_and_flags_another_answer(made: dict, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    manifest = _export(made, "fp32", bundle, "--test-images")
    code, out, err = _cli(["verify", str(bundle), "--data", str(bundle / "test-images"), "--json"])
    assert code == 0, err
    verdict = json.loads(out)
    assert verdict["same_images"] == verdict["images"] == manifest["figures"]["test_images"]
    assert verdict["top1"] == pytest.approx(manifest["figures"]["top1"]) and not verdict["mismatches"]
    assert set(verdict["latency"]) == {"1", "32"} and verdict["latency"]["32"]["recorded_ms"] > 0
    first = manifest["test_files"][0]  # the record says another class for one image
    first["prediction"] = (first["prediction"] + 1) % len(CLASSES)
    (bundle / "bundle.json").write_text(json.dumps(manifest), encoding="utf-8")
    code, out, err = _cli(["verify", str(bundle), "--data", str(bundle / "test-images")])
    assert code != 0 and "1 gave another answer here" in out and "gave another answer here than" in err


def test_export_refusals_are_one_line(made: dict, tmp_path: Path) -> None:
    runs = ["--workdir", str(made["runs"])]
    code, _, err = _cli(["export", "nothing-like-this", "--out", str(tmp_path / "b"), *runs])
    assert code == 2 and "`python -m compress rows` lists them" in err
    code, _, err = _cli(["export", "2", "--out", str(tmp_path / "b"), *runs])  # every row id starts with 2
    assert code == 2 and "matches 4 rows" in err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("keep")
    code, _, err = _cli(["export", made["rows"]["int8"]["row_id"], "--out", str(tmp_path / "full"), *runs])
    assert code == 2 and "is not an empty folder" in err and (tmp_path / "full" / "mine.txt").read_text() == "keep"
    code, _, err = _cli(["export", made["rows"]["int8"]["row_id"], "--format", "openvino", "--out",
                         str(tmp_path / "b"), *runs])
    assert code == 2 and "ships that file unchanged" in err and not (tmp_path / "b").exists()
    code, out, err = _cli(["rows", "--json", *runs])
    assert code == 0 and {r["compressor"] for r in json.loads(out)} == {"baseline", "quantization"}


def test_a_cpu_without_the_recorded_instruction_sets_is_named() -> None:
    from compress.deploy import machine

    recorded = {"avx2": True, "avx512": True, "vnni": True, "amx": None}
    assert machine.missing(recorded, {"avx2": True, "avx512": False, "vnni": False, "amx": False}) == ["avx512", "vnni"]
    assert machine.missing(recorded, {"avx2": None, "avx512": None, "vnni": None}) == []  # unknown here: not claimed
    assert set(machine.instruction_sets(["avx2", "avx512_vnni"]).items()) >= {("avx2", True), ("vnni", True),
                                                                             ("avx512", False)}


def test_resizes_and_normalizations_are_the_harness_s(tmp_path: Path) -> None:
    """The numpy twins of the torchvision steps the harness uses, image for image."""
    from torchvision import transforms as T

    from compress.data.normalization import Normalizer

    img = _photo("RGB", (57, 43), 3)
    for method, steps in (("antialias", [T.Resize((32, 32)), T.ToTensor()]),
                          ("nearest", [T.Resize((32, 32), interpolation=T.InterpolationMode.NEAREST), T.ToTensor()])):
        assert np.array_equal(preprocess.resized(img, 32, method), T.Compose(steps)(img).numpy())
    for size in (32, 40, 80):  # down, and up
        want = T.Compose([T.PILToTensor(), T.ConvertImageDtype(torch.float32),
                          T.Resize((size, size), interpolation=T.InterpolationMode.BILINEAR, antialias=False)])(img)
        assert np.abs(preprocess.resized(img, size, "bilinear") - want.numpy()).max() < 1e-6
    x = preprocess.to_unit(img)
    for mode in ("imagenet", "half", "unit", "raw", "caffe", "affine(scale=[0.5,1,2],offset=[-1,0,1])"):
        assert np.allclose(preprocess.normalize(x, mode), Normalizer(mode)(torch.from_numpy(x)).numpy(), atol=1e-5)
    assert not np.allclose(preprocess.normalize(x, "caffe"), preprocess.normalize(x, "raw"))
