"""Real user folders are messy: odd names, every image mode, junk files, broken images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compress.cli.main import main
from compress.data import datasets, normalization
from compress.errors import CompressError
from compress.experiments.baseline import stored_split
from compress.store.workspace import Workspace
from tests.conftest import QUICK_LATENCY

CLASSES = ("Early blight", "Gesund é", "Späte Fäule")  # spaces and non-ASCII


def _img(mode: str, size: tuple[int, int] = (48, 40), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    if mode == "P":
        return rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    return rgb.convert(mode)


def make_messy_folder(root: Path) -> dict[str, list[str]]:
    """Each class: every extension and mode once; plus junk that must be skipped and two broken images."""
    variants = [("a.jpg", "RGB"), ("b.JPG", "L"), ("c.jpeg", "CMYK"), ("d.png", "RGBA"), ("e.png", "LA"),
                ("f.bmp", "P"), ("g.webp", "RGBA"), ("h.PNG", "I;16")]
    for ci, cls in enumerate(CLASSES):
        d = root / cls
        (d / "nested").mkdir(parents=True)
        for i, (name, mode) in enumerate(variants):
            img = _img("L" if mode == "I;16" else mode, seed=10 * ci + i)
            if mode == "I;16":
                img = Image.fromarray((np.asarray(img, dtype=np.uint16) * 257))
            img.save(d / name)
        _img("RGB", (3000, 2000), seed=ci).save(d / "nested" / "huge.jpg", quality=60)  # very large photo
        (d / ".DS_Store").write_bytes(b"\0\1junk")
        (d / "._a.jpg").write_bytes(b"AppleDouble junk")  # hidden: macOS resource fork
        (d / "notes.txt").write_text("not an image")
    good = root / CLASSES[0] / "a.jpg"
    (root / CLASSES[0] / "truncated.jpg").write_bytes(good.read_bytes()[:300])
    (root / CLASSES[1] / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    (root / ".hidden_class").mkdir()
    return {"broken": [f"{CLASSES[0]}/truncated.jpg", f"{CLASSES[1]}/corrupt.png"]}


def test_messy_folder_loads_every_good_image_as_rgb_and_names_the_broken_ones(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_messy_folder(tmp_path / "photos")
    bundle = datasets.load(datasets.DataConfig(data=str(tmp_path / "photos"), image_size=32))
    err = capsys.readouterr().err
    assert bundle.classes == sorted(CLASSES) and bundle.num_classes == 3
    assert len(bundle.train_pool) == 3 * 9  # 8 variants + the huge photo per class; junk and broken skipped
    assert "skipped 2 unreadable image(s)" in err and "truncated.jpg" in err and "corrupt.png" in err
    assert "ignored 3 non-image file(s)" in err  # notes.txt per class; hidden files are not even counted
    for i in range(len(bundle.train_pool)):
        x, y = bundle.train_pool[i]
        assert tuple(x.shape) == (3, 32, 32) and 0 <= y < 3 and bool(x.isfinite().all())
    again = datasets.load(datasets.DataConfig(data=str(tmp_path / "photos"), image_size=32))
    assert again.fingerprint == bundle.fingerprint and again.classes == bundle.classes
    with pytest.raises(CompressError, match=r"2 image\(s\) cannot be read: .*truncated.jpg"):
        datasets.load(datasets.DataConfig(data=str(tmp_path / "photos"), image_size=32, strict=True))


def test_a_changed_folder_is_detected_instead_of_silently_re_split(tmp_path: Path) -> None:
    make_messy_folder(tmp_path / "photos")
    cfg = datasets.DataConfig(data=str(tmp_path / "photos"), image_size=32)
    ws = Workspace(tmp_path / "runs")
    split = stored_split(ws, cfg, datasets.load(cfg))
    assert stored_split(ws, cfg, datasets.load(cfg)) == split  # same data: same split, from disk
    _img("RGB", seed=99).save(tmp_path / "photos" / CLASSES[2] / "new.jpg")
    with pytest.raises(CompressError, match="changed since its split was stored"):
        stored_split(ws, cfg, datasets.load(cfg))


def test_baseline_and_a_compressor_run_on_the_messy_folder(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    make_messy_folder(tmp_path / "photos")
    common = ["--data", str(tmp_path / "photos"), "--image-size", "32", "--workdir", str(tmp_path / "runs"),
              "--reports-dir", str(tmp_path / "reports"), *QUICK_LATENCY, "--json"]
    code = main(["run", "slim-head", "--baseline-epochs", "1", "--epochs", "1", "--batch-size", "8", *common])
    out = capsys.readouterr()
    assert code == 0, out.err
    base, slim = json.loads(out.out)
    assert base["num_classes"] == slim["num_classes"] == 3 and slim["accuracy"] is not None
    assert "truncated.jpg" in out.err
    report = (tmp_path / "reports" / "photos.md").read_text()
    assert "slim-head" in report
    code = main(["baseline", "--strict", *common])
    assert code == 2 and "cannot be read" in capsys.readouterr().err


def test_folders_at_224_px_are_imagenet_normalised_nfd_names_gif_and_tif_load(tmp_path: Path) -> None:
    """The seeds' 224 px input with ImageNet mean/std; macOS's NFD folder names; .gif and .tif images."""
    import unicodedata

    nfd = unicodedata.normalize("NFD", "Späte Fäule")
    colours = {"Early_blight": (255, 0, 0), nfd: (0, 128, 255)}
    for cls, rgb in colours.items():
        (tmp_path / cls).mkdir()
        for ext in (".gif", ".tif", ".jpg"):
            Image.new("RGB", (50, 40), rgb).save(tmp_path / cls / f"x{ext}")
    bundle = datasets.load(datasets.DataConfig(data=str(tmp_path)))
    assert bundle.classes == ["Early_blight", "Späte Fäule"] and bundle.image_size == 224  # NFC, sorted
    assert len(bundle.train_targets) == 6  # all three formats read, in both classes
    x, y = bundle.train_pool[0]
    assert x.shape == (3, 224, 224)
    want = [(c / 255 - m) / s for c, m, s in zip((255, 0, 0), normalization.IMAGENET_MEAN, normalization.IMAGENET_STD)]
    assert y == 0 and torch.allclose(x.mean(dim=(1, 2)), torch.tensor(want), atol=0.02)
