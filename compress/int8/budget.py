"""Int8 within an accuracy budget: layers put back to fp32, most sensitive first, until the drop is within D.

Full int8 first (with `--keep-fp32`'s layers in fp32); while the validation top-1 is more than D
points below the fp32 model's, the next layer in sensitivity order goes back to fp32 and the model
is quantized and scored again. The order comes from an int8 sensitivity scan of the same weights:
each layer ranked by the validation accuracy of the model with that layer alone in int8 (lowest
first), ties broken by SQNR (lowest first). Activation ranges are calibrated once, by ONNX
Runtime's own calibration cache, and reused for every exclusion set. The test split is never
read here: the row is scored on it afterwards, like every row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from compress.errors import CompressError
from compress.log import log

Quantize = Callable[[Path, list[str]], None]  # (output file, nodes kept in fp32)
Score = Callable[[Path], float]  # validation top-1 (0-1) of an ONNX file


@dataclass(frozen=True)
class Tools:
    """How the loop makes and judges a model: quantize to `out` with these layers in fp32, score `out`."""

    quantize: Quantize
    score: Score
    out: Path


@dataclass
class Step:
    fp32_layers: list[str]
    val_accuracy: float
    drop: float  # points below the fp32 model on the validation split


@dataclass
class Budgeted:
    path: Path
    fp32_layers: list[str]
    steps: list[Step] = field(default_factory=list)
    fp32_val: float = 0.0


def within(max_drop: float, start: list[str], ranked: Callable[[], list[str]], tools: Tools,
           fp32_val: float) -> Budgeted:
    """The first model, putting layers back in `ranked()` order after `start`, whose validation drop is within
    `max_drop` points; a CompressError when only the all-fp32 model is (nothing is stored then). The order is
    asked for only when the first model misses the budget (a scan costs a quantization per layer)."""
    kept, steps = list(start), []
    queue: list[str] | None = None
    while True:
        tools.quantize(tools.out, kept)
        acc = tools.score(tools.out)
        steps.append(Step(list(kept), acc, round(100 * (fp32_val - acc), 4)))
        log(f"int8 within {max_drop:g} points: {len(kept)} layer(s) in fp32, validation top-1 {100 * acc:.2f}% "
            f"({-steps[-1].drop:+.2f} points against fp32)")
        if steps[-1].drop <= max_drop:
            return Budgeted(tools.out, kept, steps, fp32_val)
        if queue is None:
            queue = [name for name in ranked() if name not in kept]
        if len(queue) <= 1:  # putting back the last int8 layer leaves the fp32 model
            raise CompressError(f"--max-drop {max_drop:g}: with {len(kept)} of {len(kept) + len(queue)} layers back in "
                                f"fp32 the validation drop is still {steps[-1].drop:.2f} points; only the all-fp32 "
                                "model is within the budget, so no int8 row is stored")
        kept.append(queue.pop(0))


def record(result: Budgeted, source: str) -> dict[str, Any]:
    """What the row keeps of the search: the layers in fp32, each step's validation drop, where the order came
    from."""
    return {"fp32_layers": result.fp32_layers, "order_from": source, "fp32_val_accuracy": result.fp32_val,
            "steps": [{"fp32_layers": s.fp32_layers, "val_accuracy": s.val_accuracy, "drop_points": s.drop}
                      for s in result.steps]}
