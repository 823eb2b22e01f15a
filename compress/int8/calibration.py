"""Calibration for static int8: the images activation ranges are read from, and ONNX Runtime's reader over them.

Every int8 path calibrates here, so the compressor, the scan and NNCF see the same images.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from compress.errors import CompressError
from compress.measuring import onnx_export

MIN_CALIBRATION = 32  # fewer images than this give activation ranges no one should trust
CALIBRATION_SIZE = 320  # the default of every int8 path (ten batches of 32)


def check_size(size: int) -> None:
    """Refuse a calibration set too small to trust, naming the flag."""
    if size < MIN_CALIBRATION:
        raise CompressError(f"--calibration-size must be at least {MIN_CALIBRATION} images, got {size}: fewer give "
                            "unreliable activation ranges")


def calibration_batches(loader: Any, size: int, batch: int = 32) -> list[np.ndarray]:
    """The first `size` training images (the loader's order is seeded), in batches."""
    out: list[np.ndarray] = []
    have = 0
    for x, _ in loader:
        take = x[: size - have].numpy()
        out += [take[i:i + batch] for i in range(0, len(take), batch)]
        have += len(take)
        if have >= size:
            break
    if have < size:
        raise CompressError(f"calibration needs {size} training images but the training split has {have}: "
                            f"pass --calibration-size {max(have, 0)} or fewer (at least {MIN_CALIBRATION}), "
                            "or use more data")
    return out


class CalibrationReader:
    """onnxruntime.quantization.CalibrationDataReader over in-memory batches."""

    def __init__(self, batches: list[np.ndarray]) -> None:
        self._it: Iterator[np.ndarray] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._it, None)
        return None if x is None else {onnx_export.INPUT: x}

    def __iter__(self) -> "CalibrationReader":  # ONNX Runtime's QDQ debugging API iterates where the quantizer calls get_next
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item
