"""ImageFolder trees of real photos, as the seeds use them, tolerant of real-world mess.

Classes are the sorted (Unicode NFC) folder names. Hidden files and non-image files are
skipped; images that do not decode are skipped with a warning naming each (or refused with
--strict). Every image is converted to RGB, whatever its mode.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from compress.deploy.preprocess import IMAGE_EXTS, open_rgb  # one decoder for the harness and the bundles
from compress.errors import CompressError
from compress.log import log



def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") or part.startswith("__MACOSX") for part in rel.parts)


class ImageFiles(Dataset):
    """(image, label) from a list of files; every image converted to RGB before the transform."""

    def __init__(self, samples: list[tuple[str, int]], transform: Any, size: int | None) -> None:
        self.samples, self.transform, self.size = samples, transform, size  # size: JPEG draft target (None: full)
        self.targets = [t for _, t in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, target = self.samples[i]
        return self.transform(open_rgb(path, self.size)), target


def _check_image(path: Path, size: int) -> str | None:
    """None if the image decodes completely, else why not (truncated, not an image, ...)."""
    try:
        img = open_rgb(path, size)
        img.load()
        return None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError...
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'}"


def scan(root: Path, size: int, strict: bool, flag: str = "--data") -> tuple[list[str], list[tuple[str, int]], str]:
    """(classes, (path, label) samples, fingerprint) of one ImageFolder tree; `flag` names it in errors."""
    root = Path(root)
    if not root.exists():
        raise CompressError(f"{flag} {root} does not exist: pass a folder with one sub-folder of images per class")
    if not root.is_dir():
        raise CompressError(f"{flag} {root} is a file: pass a folder with one sub-folder of images per class")
    class_dirs = sorted((p for p in root.iterdir() if p.is_dir() and not _hidden(Path(p.name))),
                        key=lambda p: unicodedata.normalize("NFC", p.name))
    if not class_dirs:
        raise CompressError(f"{flag} {root} has no class folders: expected {root}/<class name>/<image files>")
    _check_layout(root, class_dirs, flag)
    classes = [unicodedata.normalize("NFC", p.name) for p in class_dirs]
    if len(classes) < 2:
        skipped = sorted(p.name for p in root.iterdir() if p.is_dir() and _hidden(Path(p.name)))
        raise CompressError(f"{flag} {root} has {len(classes)} class folder ({', '.join(classes)}): a classifier needs "
                            f"at least two, one sub-folder of images per class"
                            + (f" (hidden folders ignored: {', '.join(skipped)})" if skipped else ""))
    samples: list[tuple[str, int]] = []
    empty, bad, ignored = [], [], 0
    for label, cdir in enumerate(class_dirs):
        files = sorted((p for p in cdir.rglob("*") if p.is_file() and not _hidden(p.relative_to(cdir))),
                       key=lambda p: unicodedata.normalize("NFC", str(p.relative_to(root))))
        images = [p for p in files if p.suffix.lower() in IMAGE_EXTS]
        ignored += len(files) - len(images)
        good = []
        for p in images:
            why = _check_image(p, size)
            if why is None:
                good.append((str(p), label))
            else:
                bad.append(f"{p.relative_to(root)} ({why})")
        if not good:
            empty.append(classes[label])
        samples += good
    _check_unique(root, samples, classes, flag)
    if bad and strict:
        raise CompressError(f"{flag} {root}: {len(bad)} image(s) cannot be read: {'; '.join(bad[:5])}"
                            f"{' ...' if len(bad) > 5 else ''}; fix or remove them, or drop --strict to skip them")
    if bad:
        log(f"warning: skipped {len(bad)} unreadable image(s) under {root}: " + "; ".join(bad))
    if ignored:
        log(f"note: ignored {ignored} non-image file(s) under {root} (images: {' '.join(IMAGE_EXTS)})")
    if empty:
        raise CompressError(f"{flag} {root}: class folder(s) {', '.join(empty)} hold no readable images "
                            f"({' '.join(IMAGE_EXTS)}): add images or remove the folder")
    listing = "\n".join(f"{unicodedata.normalize('NFC', str(Path(p).relative_to(root)))}:{os.path.getsize(p)}"
                         for p, _ in samples)
    return classes, samples, hashlib.sha256(listing.encode("utf-8", "surrogateescape")).hexdigest()[:16]


SPLIT_NAMES = {"train", "training", "test", "testing", "val", "valid", "validation"}


def _check_layout(root: Path, class_dirs: list[Path], flag: str) -> None:
    """Class folders that are really something else: a train/test layout (`kaggle/{train,test}/{cat,dog}`
    would train a "train vs test" classifier), or a link back into the tree (`zz -> .`)."""
    names = {p.name.lower() for p in class_dirs}
    if names & {"train", "training"} and names <= SPLIT_NAMES and \
            all(any(c.is_dir() for c in p.iterdir()) for p in class_dirs):
        train = next(p for p in class_dirs if p.name.lower() in ("train", "training"))
        test = next((p for p in class_dirs if p.name.lower() in ("test", "testing")), None)
        raise CompressError(f"{flag} {root} holds {', '.join(sorted(p.name for p in class_dirs))} folders of class "
                            f"folders, not classes: pass {flag} {train}" + (f" --test-data {test}" if test else ""))
    real_root = root.resolve()
    for p in class_dirs:
        target = p.resolve()
        if p.is_symlink() and (target == real_root or target in real_root.parents or real_root in target.parents):
            raise CompressError(f"{flag} {root}: the class folder {p.name} links to {target}, inside or above the "
                                "data folder itself: its images would be counted under two classes; remove the link")


def _check_unique(root: Path, samples: list[tuple[str, int]], classes: list[str], flag: str) -> None:
    """The same image file under two classes (through a link) would be in train and test at once."""
    seen: dict[str, int] = {}
    for path, label in samples:
        real = os.path.realpath(path)
        if seen.setdefault(real, label) != label:
            raise CompressError(f"{flag} {root}: the image {real} is under two classes ({classes[seen[real]]}, "
                                f"{classes[label]}) through a link: remove the link or the copy")
