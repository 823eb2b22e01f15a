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
BASELINE_RUNS = "baseline"  # the run folders of each invocation's baseline row sit beside the compressors'


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

    def dataset_dir(self, dataset: str) -> Path:
        """Everything one dataset's commands write, except its baselines and splits (kept by data key)."""
        return self.root / dataset

    def compressor_dir(self, dataset: str, compressor: str) -> Path:
        """The run folders of one compressor (or of the baseline's rows, `BASELINE_RUNS`), each named by row id."""
        return self.dataset_dir(dataset) / compressor

    def run_dir(self, dataset: str, compressor: str, row_id: str) -> Path:
        return self.compressor_dir(dataset, compressor) / row_id

    def predictions(self, dataset: str, compressor: str, row_id: str) -> Path:
        """The harness's predicted class per test image of one row (beside its row.json)."""
        return self.run_dir(dataset, compressor, row_id) / "predictions.npy"

    def dataset_record(self, dataset: str) -> Path:
        """Which data a dataset name stands for in this workdir (written by the first run that uses the name)."""
        return self.dataset_dir(dataset) / "dataset.json"

    def sensitivity_dir(self, dataset: str) -> Path:
        """The stored sensitivity scans of one dataset (one file per kind and baseline)."""
        return self.dataset_dir(dataset) / "sensitivity"

    def search_dir(self, dataset: str) -> Path:
        """The stored outcomes of `compress search` on one dataset (one file per search)."""
        return self.dataset_dir(dataset) / "search"

    def run_all_record(self, dataset: str) -> Path:
        """What the last `run all` on one dataset did (steps, seconds), for the report."""
        return self.dataset_dir(dataset) / "run_all.json"

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
        runs = [p for p in self._children(self.baseline_dir("x", "y").parent)]
        folders = [self.root, self.split_path("x").parent]
        kinds = {*compressors, BASELINE_RUNS}
        for entry in self._children(self.root):
            name = entry.name
            mine = [self.compressor_dir(name, c) for c in sorted(kinds) if self.compressor_dir(name, c).is_dir()]
            if not mine and not any(p.exists() for p in self.dataset_entries(name)):
                continue  # not a dataset folder of ours
            folders += [self.dataset_dir(name), self.search_dir(name), self.sensitivity_dir(name)]
            runs += [run for c in mine for run in self._children(c)]
        return folders + runs, runs

    def dataset_entries(self, dataset: str) -> list[Path]:
        """What one dataset's folder holds besides its compressors' run folders."""
        return [self.run_all_record(dataset), self.search_dir(dataset), self.sensitivity_dir(dataset),
                self.dataset_record(dataset)]

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
