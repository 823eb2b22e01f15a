"""Where runs, baselines, splits and the results store live: one folder, the workdir (default ./runs)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from compress.errors import CompressError, printable
from compress.store.atomic import write_json
from compress.store.sqlite import Store

RESERVED = ("results.sqlite", "baselines", "splits", "tmp")  # the workdir's own entries


@dataclass(frozen=True)
class Workspace:
    """Where runs, baselines, splits and the results store live (default ./runs)."""

    root: Path

    @classmethod
    def default(cls) -> "Workspace":
        return cls(Path(os.environ.get("COMPRESS_HOME", "runs")))

    @property
    def store(self) -> Store:
        return Store(self.root / "results.sqlite")

    def split_path(self, data_key: str) -> Path:
        """The stored split of one data configuration (`DataConfig.key()`)."""
        return self.root / "splits" / f"{data_key}.json"

    def baseline_dir(self, data_key: str, source: str) -> Path:
        """The one place a baseline's cache folder is named: per data configuration and source (an arch, or
        `import-<digest>` for your checkpoint)."""
        return self.root / "baselines" / f"{data_key}-{source}"

    def run_dir(self, dataset: str, compressor: str, row_id: str) -> Path:
        return self.root / dataset / compressor / row_id

    def dataset_record(self, dataset: str) -> Path:
        """Which data a dataset name stands for in this workdir (written by the first run that uses the name)."""
        return self.root / dataset / "dataset.json"

    def claim(self, dataset: str, source: str, write: bool = True) -> None:
        """The name `dataset` is this data's in this workdir: refused when another data source holds it (two
        folders both called photos would share one report, a's rows compared with b's baseline). A source that no
        longer exists (a moved folder) gives the name up. `write=False`: only check (before any work)."""
        path = self.dataset_record(dataset)
        try:
            held = json.loads(path.read_text()).get("source") if path.is_file() else None
        except (OSError, ValueError, AttributeError):
            held = None  # unreadable: rewritten below
        if held == source:
            return
        if isinstance(held, str) and held != source and _still_there(held):
            raise CompressError(f"the dataset name {dataset!r} is already used in {self.root} by {printable(held)}; "
                                f"this run's data is {printable(source)}: pass --dataset-name NAME to give it a name "
                                "of its own (or use another --workdir)")
        if write:
            write_json(path, {"name": dataset, "source": source})

    @staticmethod
    def check_dataset_name(name: str) -> None:
        """A dataset's runs live in <workdir>/<dataset>/: a data folder named like the workdir's own entries
        would take their place."""
        if name in RESERVED:
            raise CompressError(f"the data folder's name {name!r} is one the workdir uses itself ({', '.join(RESERVED)}): "
                                "rename the folder, or link it under another name, and pass that to --data")

    @property
    def temp(self) -> Path:
        """Temporary files of this workdir's runs (ONNX exports, calibration copies): on the workdir's disk, and
        removed at the next start when the process that made them was killed."""
        return self.root / "tmp"

    def own_folders(self, compressors: Iterable[str]) -> tuple[list[Path], list[Path]]:
        """(every folder this tool writes files in, the run and baseline folders among them) that exist now:
        what the start-up clean-up may look in. A folder of the user's inside the workdir is not among them."""
        runs = [p for p in self._children(self.root / "baselines")]
        folders = [self.root, self.root / "splits"]
        for dataset in self._children(self.root):
            mine = [dataset / c for c in compressors if (dataset / c).is_dir()]
            if not mine and not any((dataset / n).exists() for n in ("run_all.json", "search", "sensitivity",
                                                                       "dataset.json")):
                continue  # not a dataset folder of ours
            folders += [dataset, dataset / "search", dataset / "sensitivity"]
            runs += [run for c in mine for run in self._children(c)]
        return folders + runs, runs

    @staticmethod
    def _children(folder: Path) -> list[Path]:
        try:
            return sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()) if folder.is_dir() else []
        except OSError:
            return []


def _still_there(source: str) -> bool:
    """A recorded folder that still exists holds its name; a built-in dataset always does."""
    kind, _, where = source.partition(" ")
    return kind != "folder" or Path(where).is_dir()
