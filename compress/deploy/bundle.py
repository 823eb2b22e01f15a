"""A deploy bundle on disk: bundle.json (what was measured, and how to feed it) and the files it lists by sha256.

Read by the runner before anything runs: a file whose bytes differ from what the export recorded is refused, so
what runs is what was measured. Ships inside every bundle: imports nothing of compress.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = "compress-bundle/1"
MANIFEST = "bundle.json"


class BundleError(ValueError):
    """A bundle that cannot be used as it is (missing, changed, or of another format), named in one line."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` except the manifest, by POSIX path relative to it."""
    return {p.relative_to(folder).as_posix(): sha256(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MANIFEST and "__pycache__" not in p.parts}


@dataclass(frozen=True)
class Bundle:
    """An opened, checked bundle."""

    folder: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, folder: Path, check: bool = True) -> "Bundle":
        """Read bundle.json; with `check`, refuse any listed file that is missing or whose sha256 changed."""
        folder = Path(folder)
        path = folder / MANIFEST
        if not path.is_file():
            raise BundleError(f"{folder} is not a bundle: no {MANIFEST} in it (make one with "
                              "`python -m compress export ROW --out DIR`)")
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BundleError(f"{path} cannot be read as JSON ({exc}): export the row again") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
            raise BundleError(f"{path} is format {found!r}, this runner reads {FORMAT!r}: export the row again")
        bundle = cls(folder, manifest)
        if check:
            bundle.check()
        return bundle

    def check(self) -> None:
        """Every listed file present with the sha256 the export recorded (a changed model is not the measured one)."""
        for rel, want in sorted(self.manifest.get("files", {}).items()):
            path = self.folder / rel
            if not path.is_file():
                raise BundleError(f"{path} is missing from the bundle (bundle.json lists it): export the row again")
            got = sha256(path)
            if got != want:
                raise BundleError(f"{path} was changed after export (sha256 {got[:12]}..., bundle.json says "
                                  f"{want[:12]}...): this is not the model that was measured; export the row again")

    @property
    def model_path(self) -> Path:
        return self.folder / self.manifest["model"]["file"]

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def preprocessing(self) -> dict[str, Any]:
        return dict(self.manifest["preprocessing"])

    @property
    def runtimes(self) -> list[str]:
        """The runtimes that may run this model file, the measured one first."""
        return list(self.manifest["model"]["runtimes"])

    def runtime(self, asked: str | None) -> str:
        """The runtime to use: the one asked for if the bundle allows it, else the measured one."""
        if asked is None:
            return self.runtimes[0]
        if asked not in self.runtimes:
            raise BundleError(f"--runtime {asked}: this bundle's {self.manifest['model']['format']} model runs on "
                              f"{', '.join(self.runtimes)}; pass one of them")
        return asked
