"""What deploying a row costs: export time, bundle size, the runner's cold start and throughput (docs/deploy.md).

    python scripts/deploy_costs.py ROW [ROW ...] [--workdir runs] > deploy_costs.md

For each row: `compress export ROW --out TMP --test-images` (wall time), the bundle's size against the row's
own size column, then `python TMP/predict.py` and `python -m compress predict TMP` on the exported test images
at --batch-size 1 and 32: process start to exit for one image (cold start) and images per second over all of
them (wall time of the whole process, decoding included). One process at a time, nothing else timed beside it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("rows", nargs="+")
    p.add_argument("--workdir", default="runs")
    args = p.parse_args()
    print("| row | export s | bundle MB (the row's model file MB) | runner | cold start s | b1 img/s | b32 img/s |")
    print("|---|---|---|---|---|---|---|")
    for ref in args.rows:
        out = Path(tempfile.mkdtemp()) / "bundle"
        export_s = _wall([sys.executable, "-m", "compress", "export", ref, "--out", str(out), "--test-images",
                          "--workdir", args.workdir])
        manifest = json.loads((out / "bundle.json").read_text())
        images = sorted(str(f) for f in (out / "test-images").rglob("*") if f.is_file())
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file() and "test-images" not in f.parts)
        name = f"{manifest['compressor']} ({manifest['model']['format']}, {len(images)} test images)"
        fig = manifest["figures"]  # an int8 row ships its size column's file; an fp32 row its ONNX export
        own = fig["size_bytes"] if "measured_file" in manifest["model"] else fig["onnx_size_bytes"]
        for runner, cmd in (("predict.py", [sys.executable, str(out / "predict.py")]),
                            ("compress predict", [sys.executable, "-m", "compress", "predict", str(out)])):
            cold = _wall([*cmd, images[0]])
            rates = [len(images) / _wall([*cmd, *images, "--batch-size", str(b)]) for b in (1, 32)]
            print(f"| {name} | {export_s:.1f} | {size / 1e6:.1f} ({own / 1e6:.1f}) | "
                  f"{runner} | {cold:.2f} | {rates[0]:.0f} | {rates[1]:.0f} |", flush=True)


if __name__ == "__main__":
    main()
