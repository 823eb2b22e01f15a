"""Your Keras VGG16 as the baseline: files Keras itself writes (Keras 3 on its PyTorch backend, no TensorFlow),
converted exactly, with the input they expect; and one line for each file that is not one."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported anywhere: no TensorFlow here

import contextlib
import io
import json
from typing import Any
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from compress.cli.main import main
from compress.data.normalization import Normalizer
from compress.deploy import preprocess
from compress.errors import CompressError
from compress.models import keras_convert
from compress.models.checkpoints import load_model
from tests.conftest import QUICK_LATENCY
from tests.photos import photo_folder

keras = pytest.importorskip("keras")
WIDTHS = (8, 8, 8, 8, 16, 16, 16, 16, 16, 16, 16, 16, 16)  # VGG16's shape, narrow: seconds, not minutes
POOL_AFTER = (1, 3, 6, 9, 12)


def _vgg(size: int = 64, classes: int = 3, first: list | None = None, head: tuple[int, ...] = (32, 32),
         std: float | None = 0.05):
    """A Sequential VGG16 as seed 003 builds it (13 Conv2D, MaxPool2D, Flatten, Dense, Dense, softmax); `std` of
    the kernels: 0.05 for 0-255 inputs, None (He's sqrt(2/fan_in)) for normalized ones, whose signal 0.05 loses."""
    layers = keras.layers
    seq = [keras.Input((size, size, 3)), *(first or [])]
    for i, w in enumerate(WIDTHS):
        seq.append(layers.Conv2D(w, (3, 3), padding="same", activation="relu"))
        if i in POOL_AFTER:
            seq.append(layers.MaxPool2D((2, 2), strides=(2, 2)))
    seq += [layers.Flatten(), *(layers.Dense(h, activation="relu") for h in head),
            layers.Dense(classes, activation="softmax")]
    keras.utils.set_random_seed(0)
    model = keras.Sequential(seq)
    for w in model.trainable_weights:  # Keras zeroes biases: random biases test their conversion too
        scale = (std or (2 / np.prod(w.shape[:-1])) ** 0.5) if "kernel" in w.path else 0.1
        w.assign(np.random.default_rng(len(w.path)).normal(0, scale, w.shape))
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from keras.src.legacy.saving import legacy_h5_format

    d = tmp_path_factory.mktemp("keras")
    model = _vgg()
    out = {"model.h5": d / "model.h5", "model.keras": d / "model.keras", "model.weights.h5": d / "model.weights.h5",
           "best_model.h5": d / "best_model.h5"}
    model.save(out["model.h5"])
    model.save(out["model.keras"])
    model.save_weights(out["model.weights.h5"])
    with h5py.File(out["best_model.h5"], "w") as fh:  # the Keras-2 weights-only layout (seed 002's best_model.h5)
        legacy_h5_format.save_weights_to_hdf5_group(fh, model)
    return out


def _images(size: int = 64) -> np.ndarray:
    return np.random.default_rng(1).uniform(0, 255, (6, size, size, 3)).astype("float32")  # what the seeds feed


@pytest.mark.parametrize("name", ["model.h5", "model.keras", "model.weights.h5", "best_model.h5"])
def test_every_keras_format_converts_exactly(name: str, files: dict[str, Path]) -> None:
    """Softmax equal to Keras's predict within 1e-5, the same argmax: HWIO->OIHW, the Flatten order, the head."""
    x = _images()
    want = np.asarray(keras.saving.load_model(files["model.keras"]).predict(x, verbose=0))
    imported = load_model(files[name], image_size=64)
    with torch.no_grad():
        got = torch.softmax(imported.model.eval()(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())), 1).numpy()
    assert np.abs(got - want).max() < 1e-5 and (got.argmax(1) == want.argmax(1)).all()
    assert imported.spec.flatten_side == 2 and imported.spec.conv_widths == WIDTHS  # 64 px: a 2x2 map, kept
    notes = " ".join(imported.extra["keras"]["notes"])
    assert "softmax was dropped" in notes or "states no input size: 64 px taken from --image-size" in notes


def test_the_flatten_order_matters(files: dict[str, Path]) -> None:
    """The check above can fail: without the (H, W, C) -> (C, H, W) permutation the outputs differ."""
    imported = load_model(files["model.h5"], image_size=64)
    first = next(m for m in imported.model.classifier if isinstance(m, torch.nn.Linear))
    x = torch.from_numpy(_images().transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        right = imported.model(x)
        c = first.weight.shape[1] // 4
        first.weight.copy_(first.weight.reshape(-1, c, 2, 2).permute(0, 2, 3, 1).reshape(first.weight.shape))
        wrong = imported.model(x)
    assert (right - wrong).abs().max() > 1e-3


def test_a_rescaling_layer_becomes_the_input_normalization(tmp_path: Path) -> None:
    """Rescaling(1/255) in the model: the converted model reads 0-1 images (`unit`), the same function."""
    model = _vgg(first=[keras.layers.Rescaling(1 / 255.0)])
    model.save(tmp_path / "r.keras")
    x = _images()
    want = np.asarray(model.predict(x, verbose=0))
    imported = load_model(tmp_path / "r.keras", image_size=64)
    assert imported.extra["keras"]["normalization"] == "unit"
    unit = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()) / 255.0
    with torch.no_grad():
        got = torch.softmax(imported.model.eval()(Normalizer("unit")(unit)), 1).numpy()
    assert np.abs(got - want).max() < 1e-5


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_a_normalization_layer_is_folded_into_the_input(suffix: str, tmp_path: Path) -> None:
    """An adapted Normalization (its mean and variance are weights), after a Rescaling: the converted model reads
    the folded affine on 0-255 pixels, computes Keras's function, and the row can state it."""
    norm = keras.layers.Normalization()
    norm.adapt(_images() / 255.0)
    model = _vgg(first=[keras.layers.Rescaling(1 / 255.0), norm], std=None)
    model.save(tmp_path / f"n{suffix}")
    x = _images()
    want = np.asarray(model.predict(x, verbose=0))
    imported = load_model(tmp_path / f"n{suffix}", image_size=64)
    mode = imported.extra["keras"]["normalization"]
    assert mode.startswith("affine(scale=[") and mode == keras_convert.expected(tmp_path / f"n{suffix}")["normalization"]
    unit = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()) / 255.0
    with torch.no_grad():
        got = torch.softmax(imported.model.eval()(Normalizer(mode)(unit)), 1).numpy()
        wrong = torch.softmax(imported.model.eval()(Normalizer("unit")(unit)), 1).numpy()
    assert np.abs(got - want).max() < 1e-5 and np.abs(wrong - want).max() > 1e-3


def test_normalization_given_in_the_config_and_inverted(tmp_path: Path) -> None:
    """mean= and variance= in the config (no weights) are read from it; invert=True is one line."""
    model = _vgg(first=[keras.layers.Normalization(mean=[120.0, 110.0, 100.0], variance=[3600.0, 2500.0, 4900.0])],
                 std=None)
    model.save(tmp_path / "given.keras")
    x = _images()
    want = np.asarray(model.predict(x, verbose=0))
    imported = load_model(tmp_path / "given.keras", image_size=64)
    unit = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()) / 255.0
    with torch.no_grad():
        got = torch.softmax(imported.model(Normalizer(imported.extra["keras"]["normalization"])(unit)), 1).numpy()
    assert np.abs(got - want).max() < 1e-5
    inverted = _vgg(first=[keras.layers.Normalization(mean=[1.0, 1.0, 1.0], variance=[1.0, 1.0, 1.0], invert=True)])
    inverted.save(tmp_path / "inverted.keras")
    with pytest.raises(CompressError, match="invert=True"):
        load_model(tmp_path / "inverted.keras", image_size=64)


@pytest.mark.parametrize("resize", ["nearest", "bilinear"])
def test_resize_as_the_keras_pipelines_do(resize: str, tmp_path: Path) -> None:
    """--resize nearest is Keras's load_img (flow_from_directory); bilinear is a resize without antialiasing, as
    image_dataset_from_directory's tf.image.resize (here: Keras's own resize op, half-pixel centres)."""
    from compress.data.datasets import DataConfig, load

    photos = photo_folder(tmp_path / "p", per_class=1, side=200)
    bundle = load(DataConfig(data=str(photos), image_size=64, normalization="raw", resize=resize))
    got = bundle.train_pool[0][0].numpy().transpose(1, 2, 0)
    path = bundle.train_pool.samples[0][0]
    if resize == "nearest":
        want = np.asarray(keras.utils.load_img(path, target_size=(64, 64), interpolation="nearest"), np.float32)
    else:
        full = np.asarray(keras.utils.load_img(path), np.float32)
        want = np.asarray(keras.ops.image.resize(full, (64, 64), interpolation="bilinear", antialias=False))
    assert np.abs(got - want).max() < 1e-3
    default = load(DataConfig(data=str(photos), image_size=64, normalization="raw")).train_pool[0][0].numpy()
    assert np.abs(default.transpose(1, 2, 0) - want).max() > 1.0  # the default (antialiased) pixels differ


def test_caffe_normalization_is_keras_preprocess_input() -> None:
    from keras.applications.vgg16 import preprocess_input

    x = _images(8)
    want = preprocess_input(x.copy()).transpose(0, 3, 1, 2)
    got = Normalizer("caffe")(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()) / 255.0).numpy()
    assert np.abs(got - want).max() < 1e-3


def _cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_measure_a_keras_file_on_a_photo_folder(files: dict[str, Path], tmp_path: Path) -> None:
    """The seeds' command: the Keras file's input size and raw 0-255 input come with it; the row says so."""
    photos = photo_folder(tmp_path / "photos", per_class=4, side=64)
    code, out, err = _cli(["measure", "--weights", str(files["model.h5"]), "--data", str(photos), "--json",
                           "--workdir", str(tmp_path / "runs"), *QUICK_LATENCY])
    assert code == 0, err
    row = json.loads(out)[0]
    assert row["image_size"] == 64 and row["config"]["data"]["normalization"] == "raw"
    assert row["accuracy"] is not None and any("softmax was dropped" in c for c in row["caveats"])
    assert row["config"]["layout"] == "keras (Keras HDF5 model)"


def test_a_keras_baseline_is_converted_once_and_pruned(files: dict[str, Path], tmp_path: Path) -> None:
    """--baseline-weights model.keras: cached by its sha256, compressed like any baseline (pruning of a 2x2 head)."""
    photos = photo_folder(tmp_path / "photos", per_class=6, side=64)
    argv = ["run", "pruning", "--amount", "0.5", "--epochs", "0", "--baseline-weights", str(files["model.keras"]),
            "--data", str(photos), "--workdir", str(tmp_path / "runs"), "--json", *QUICK_LATENCY]
    code, out, err = _cli(argv)
    assert code == 0, err
    rows = json.loads(out)
    assert rows[0]["config"]["baseline"]["keras"]["normalization"] == "raw" and rows[1]["params"] < rows[0]["params"]
    assert len(list((tmp_path / "runs" / "baselines").glob("*-import-*"))) == 1


def _one_line(code: int, err: str, match: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("compress")]
    assert code == 2 and len(lines) == 1 and match in lines[0] and "Traceback" not in err, err


def test_keras_files_that_are_not_a_vgg16_are_one_line(tmp_path: Path) -> None:
    """Bad input: seed 002's 4-convolution CNN, a Lambda layer, a SavedModel folder, an HDF5 file that is not Keras,
    a non-square input, a truncated file; each one line, nothing stored."""
    layers = keras.layers
    small = keras.Sequential([keras.Input((32, 32, 3)), *(layers.Conv2D(4, 3, padding="same", activation="relu")
                                                          for _ in range(4)), layers.Flatten(), layers.Dense(2)])
    small.save(tmp_path / "cnn.keras")
    lam = _vgg(size=32, first=[layers.Lambda(lambda t: t * 2.0)])
    lam.save(tmp_path / "lambda.h5")
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "saved_model.pb").write_bytes(b"x")
    with h5py.File(tmp_path / "other.h5", "w") as fh:
        fh["data"] = np.zeros(3)
    wide = keras.Sequential([keras.Input((32, 48, 3)), layers.Conv2D(4, 3, padding="same", activation="relu")])
    wide.save(tmp_path / "wide.keras")
    whole = _vgg(size=32)
    whole.save(tmp_path / "whole.h5")
    data = (tmp_path / "whole.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    cases = [("cnn.keras", "found 4 Conv2D and 1 Dense layers with weights; VGG16 has 13"),
             ("lambda.h5", "is a Lambda layer: its Python code is not run here"),
             ("saved", "is a TensorFlow SavedModel folder: load it in TensorFlow and save it as one file"),
             ("other.h5", "is an HDF5 file but not one Keras wrote"),
             ("wide.keras", "its input is 32x48x3"),
             ("cut.h5", "cannot be read as a Keras file")]
    for name, match in cases:
        code, _, err = _cli(["measure", "--weights", str(tmp_path / name), "--workdir", str(tmp_path / "runs"),
                             *QUICK_LATENCY])
        _one_line(code, err, match)
    with pytest.raises(CompressError, match="built for 32 px images, but --image-size is 64: pass --image-size 32"):
        load_model(tmp_path / "whole.h5", image_size=64)
    photos = photo_folder(tmp_path / "two", classes=("a", "b"), per_class=2, side=32)
    code, _, err = _cli(["measure", "--weights", str(tmp_path / "whole.h5"), "--data", str(photos),
                         "--workdir", str(tmp_path / "runs"), *QUICK_LATENCY])
    _one_line(code, err, "predicts 3 classes but two has 2")


def _edit(src: Path, dst: Path, pick: Any, change: Any) -> Path:
    """A copy of a Keras HDF5 file with one weight array changed (`pick(name, dataset)` chooses it)."""
    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "r+") as fh:
        found = []
        fh.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) and pick(name, obj)
                      else None)
        name = found[0]
        data = np.asarray(fh[name])
        del fh[name]
        fh[name] = change(data)
    return dst


def test_keras_files_with_impossible_shapes_or_values_are_one_line(files: dict[str, Path], tmp_path: Path) -> None:
    """Hostile input: a NaN weight (measured and scored before; a .pth with one was refused), a Dense bias of the
    wrong length (a PyTorch size mismatch traceback), a NaN Rescaling scale (stored as affine(scale=[nan,...])), a
    negative variance, a zero scale, a text file named .h5 ('KeyError: 101'). One line each, nothing stored."""
    def nan(a: np.ndarray) -> np.ndarray:
        a = a.copy()
        a.flat[0] = np.nan
        return a

    _edit(files["model.h5"], tmp_path / "nan.h5", lambda n, d: d.ndim == 4, nan)
    _edit(files["model.h5"], tmp_path / "bias.h5", lambda n, d: d.ndim == 1 and "dense" in n,
          lambda a: np.zeros(len(a) + 1, a.dtype))
    _vgg(first=[keras.layers.Rescaling(float("nan"))]).save(tmp_path / "nanscale.keras")
    _vgg(first=[keras.layers.Rescaling(0.0)]).save(tmp_path / "zero.keras")
    _vgg(first=[keras.layers.Normalization(mean=0.0, variance=-1.0)]).save(tmp_path / "negvar.keras")
    (tmp_path / "notes.h5").write_text("these are my notes, not a model\n")
    cases = [("nan.h5", "holds non-finite weights (NaN or infinity)"),
             ("bias.h5", "has a bias of shape (33,), but VGG16's layer there needs (32,)"),
             ("nanscale.keras", "a preprocessing value is not finite"),
             ("zero.keras", "a zero scale makes every image the same input"),
             ("negvar.keras", "has a negative variance (-1, -1, -1)"),
             ("notes.h5", "is named like a Keras file but is a text file, not an HDF5 file or a .keras archive")]
    for name, match in cases:
        code, _, err = _cli(["measure", "--weights", str(tmp_path / name), "--workdir", str(tmp_path / "runs"),
                             "--image-size", "64", *QUICK_LATENCY])
        _one_line(code, err, match)
        assert "KeyError" not in err and "size of tensor" not in err
    assert not (tmp_path / "runs" / "results.sqlite").exists()
    with pytest.raises(CompressError, match="needs finite numbers and no zero scale"):
        Normalizer("affine(scale=[nan,1,1],offset=[0,0,0])")(torch.zeros(3, 2, 2))


def test_a_keras_row_exports_a_bundle_that_predicts_what_the_converted_model_does(files: dict[str, Path],
                                                                                 tmp_path: Path) -> None:
    """measure --store of a Keras file, then export: the bundle feeds raw 0-255 pixels at 64 px, as the row."""
    from compress.deploy.bundle import Bundle
    from compress.deploy.runner import Predictor

    photos = photo_folder(tmp_path / "photos", per_class=6, side=64)
    code, out, err = _cli(["measure", "--weights", str(files["model.h5"]), "--data", str(photos), "--store", "--json",
                           "--workdir", str(tmp_path / "runs"), *QUICK_LATENCY])
    assert code == 0, err
    row = json.loads(out)[0]
    code, _, err = _cli(["export", row["row_id"], "--out", str(tmp_path / "bundle"), "--workdir",
                         str(tmp_path / "runs")])
    assert code == 0, err
    bundle = Bundle.open(tmp_path / "bundle")
    assert bundle.preprocessing["normalization"] == "raw" and bundle.preprocessing["image_size"] == 64
    tests = [photos / t["file"] for t in bundle.manifest["test_files"]]
    got = [r.index for r in Predictor(bundle).predict(tests)]
    x = torch.stack([Normalizer("raw")(torch.from_numpy(preprocess.resized(preprocess.open_rgb(p, 64), 64,
                                                                           "antialias"))) for p in tests])
    with torch.inference_mode():
        want = load_model(files["model.h5"], image_size=64).model.eval()(x).argmax(1).tolist()
    assert got == want and len(tests) == row["test_images"]
