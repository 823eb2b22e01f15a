"""Does a model's latency depend on what it was timed beside? One invocation, the baseline timed three ways.

The baseline VGG16 (32 px, 10 classes) is timed alone, as the reference of a pair with a small model (the
VGG-11 student at width 0.25) and as the reference of a pair with an int8 model, on PyTorch eager and ONNX
Runtime, at batch 1 and 32, with the harness's own runners and pairing. Latency does not depend on the weights,
so untrained models stand in for trained ones. With --spinning the ONNX Runtime sessions keep their default
(spinning) threads, to show the trace the default leaves.

    python scripts/partner_check.py [--spinning] [--batches 1,32] > partner.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from compress.measuring import onnx_export, timing
from compress.int8 import ort_qdq
from compress.measuring.paired import interleaved
from compress.measuring.runtimes.onnx_runtime import ort_runner
from compress.measuring.runtimes.torch_eager import torch_runner
from compress.measuring.timing import LatencyConfig, time_calls, torch_threads
from compress.models.vgg import VGG11_WIDTHS, ModelSpec, build

SHAPE = (3, 32, 32)


def _int8(model: torch.nn.Module, folder: Path) -> Path:
    """The compressor's own int8 recipe (compress/int8), calibrated on random images: latency needs no trained
    ranges."""
    prepared = ort_qdq.prepare(model, torch.randn(4, *SHAPE), folder / "int8-src.onnx", folder / "int8-pre.onnx")
    batches = [np.random.default_rng(i).standard_normal((32, *SHAPE), dtype=np.float32) for i in range(4)]
    out = folder / "int8.onnx"
    ort_qdq.Quantizer(prepared.pre, batches, folder / "ranges.json")(out, prepared.first_last())
    return out


def _figures(alone: float, partners: dict[str, float]) -> dict[str, float]:
    return {"alone_ms": round(alone, 3), **{f"beside_{k}_ms": round(v, 3) for k, v in partners.items()},
            "largest_difference": round(max(abs(v / alone - 1) for v in partners.values()), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spinning", action="store_true", help="keep ONNX Runtime's default spinning threads")
    ap.add_argument("--batches", default="1,32")
    args = ap.parse_args()
    timing.ORT_ALLOW_SPINNING = args.spinning  # read by onnx_export.session at each session
    cfg = LatencyConfig()
    torch.manual_seed(0)
    base = build(ModelSpec(num_classes=10)).eval()
    student = build(ModelSpec(arch="vgg11_bn", num_classes=10, conv_widths=tuple(w // 4 for w in VGG11_WIDTHS),
                              head="gap")).eval()
    out: dict[str, object] = {"ort_allow_spinning": args.spinning, "threads": timing.default_threads(),
                              "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as d:
        files = {}
        for name, model in (("baseline", base), ("student", student)):
            files[name] = Path(d) / f"{name}.onnx"
            onnx_export.export_onnx(model, files[name], torch.randn(4, *SHAPE))
        files["int8"] = _int8(base, Path(d))
        sessions = {k: onnx_export.session(v, cfg.threads) for k, v in files.items()}
        for b in (int(x) for x in args.batches.split(",")):
            ref = ort_runner(sessions["baseline"], SHAPE, b)
            before = time_calls(ref, cfg, b).median_ms
            partners = {name: float(np.median(interleaved(ref, ort_runner(sessions[name], SHAPE, b), cfg, b,
                                                          "baseline")[0].reference_ms))
                        for name in ("student", "int8")}
            after = time_calls(ref, cfg, b).median_ms  # alone again: a drift of the machine shows here
            out[f"ort b{b}"] = {**_figures((before + after) / 2, partners), "alone_before_ms": round(before, 3),
                                "alone_after_ms": round(after, 3)}
            with torch_threads(cfg.threads):
                ref_t = torch_runner(base, SHAPE, b, torch.device("cpu"))
                alone = time_calls(ref_t, cfg, b).median_ms
                paired, _ = interleaved(ref_t, torch_runner(student, SHAPE, b, torch.device("cpu")), cfg, b,
                                        "baseline")
            out[f"torch b{b}"] = _figures(alone, {"student": float(np.median(paired.reference_ms))})
            print(f"batch {b} done", file=sys.stderr, flush=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
