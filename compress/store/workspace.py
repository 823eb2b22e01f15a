"""Where runs, baselines, splits and the results store live: one folder, the workdir (default ./runs)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from compress.data import DataConfig
from compress.store.sqlite import Store


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

    def split_path(self, data_cfg: DataConfig) -> Path:
        return self.root / "splits" / f"{data_cfg.key()}.json"

    def baseline_dir(self, data_cfg: DataConfig, arch: str) -> Path:
        return self.root / "baselines" / f"{data_cfg.key()}-{arch}"

    def run_dir(self, dataset: str, compressor: str, row_id: str) -> Path:
        return self.root / dataset / compressor / row_id
