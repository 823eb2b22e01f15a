"""`--shard K/N`: a sweep's grid cut into interleaved parts, one per scheduler array task (merged by `collect`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from compress.errors import CompressError


@dataclass(frozen=True)
class Shard:
    """`--shard K/N`: the K-th of N interleaved parts of a grid (K from 1, as Slurm array ids usually are).

    Point i of the grid (from 1, in the grid's order) belongs to shard ((i - 1) mod N) + 1:
    interleaved rather than in blocks, so every shard gets cheap and costly points alike.
    """

    index: int = 1
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> "Shard":
        try:
            k, n = (int(v) for v in text.split("/"))
        except ValueError:
            raise CompressError(f"--shard {text!r}: expected K/N with whole numbers, e.g. --shard 2/8") from None
        if n < 1 or not 1 <= k <= n:
            raise CompressError(f"--shard {text}: K must be between 1 and N (Slurm: --array=1-{max(n, 1)} and "
                                "--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)")
        return cls(k, n)

    def take(self, points: list[Any]) -> list[tuple[int, Any]]:
        """(grid position from 1, point) of this shard's points."""
        return [(i, p) for i, p in enumerate(points, 1) if (i - 1) % self.count == self.index - 1]
