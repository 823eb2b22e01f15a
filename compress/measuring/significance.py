"""Is an accuracy difference on this test set real? McNemar's exact test on paired predictions.

Two models scored on the same images disagree on some of them: b images only the first gets
right, c only the second. Under "equally accurate" each disagreement is a fair coin, so the
two-sided p-value is that of min(b, c) or fewer heads in b + c tosses, doubled (capped at 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

ALPHA = 0.05


@dataclass(frozen=True)
class McNemar:
    only_a: int  # images only model A classified correctly
    only_b: int  # images only model B classified correctly
    p_value: float

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemar:
    """Exact two-sided McNemar test on two boolean per-image correctness vectors (same images, same order)."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired test needs the same images: {a.shape} vs {b.shape}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n = only_a + only_b
    p = 1.0 if n == 0 else float(binomtest(min(only_a, only_b), n, 0.5).pvalue)
    return McNemar(only_a, only_b, min(1.0, p))
