"""Where runs, baselines, splits and the results store live: one folder, the workdir (default ./runs)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

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

    def split_path(self, data_key: str) -> Path:
        """The stored split of one data configuration (`DataConfig.key()`)."""
        return self.root / "splits" / f"{data_key}.json"

    def baseline_dir(self, data_key: str, source: str) -> Path:
        """The one place a baseline's cache folder is named: per data configuration and source (an arch, or
        `import-<digest>` for your checkpoint)."""
        return self.root / "baselines" / f"{data_key}-{source}"

    def run_dir(self, dataset: str, compressor: str, row_id: str) -> Path:
        return self.root / dataset / compressor / row_id
