#!/usr/bin/env bash
# Every CUDA path of the suite on one GPU, in under 8 minutes: CUDA latency and memory of the baseline, a pruned
# model and a student at b1/b32 (each paired with the baseline on the GPU), fp16 and bf16 on CUDA, and
# `torchrun --nproc-per-node 1` training with NCCL. Run it whenever a GPU is lent (the device tool's status says
# so); it writes reports/gpu/<card>/digits.md, naming the card, and gpu_check.log beside it.
# Usage: scripts/gpu_check.sh [workdir]   (run from the repository root, the project installed)
set -euo pipefail
if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device here (torch.cuda.is_available() is False): nothing to check" >&2
    exit 2
fi
card=$(python -c "import re, torch; print(re.sub(r'[^A-Za-z0-9]+', '-', torch.cuda.get_device_name(0)).strip('-'))")
work=${1:-/tmp/compress-gpu-check}
out=reports/gpu/$card
mkdir -p "$out"
exec > >(tee "$out/gpu_check.log") 2>&1
nvidia-smi -L || true
common=(--max-samples 600 --baseline-epochs 3 --device cuda --runtimes torch,ort,cuda --reports-dir "$out")
step() { echo "=== $(date -u +%T) $*"; }
step "baseline and pruning 0.3: CUDA latency and memory, paired with the baseline on the GPU"
python -m compress run pruning --amount 0.3 --epochs 1 "${common[@]}" --workdir "$work"
step "a VGG-11 student (width 0.25) and its no-teacher control"
python -m compress run distillation --student vgg11 --width 0.25 --epochs 1 "${common[@]}" --workdir "$work"
step "fp16 and bf16 on CUDA"
python -m compress sweep precision --dtype fp16,bf16 "${common[@]}" --workdir "$work"
step "torchrun --nproc-per-node 1: training with NCCL"
torchrun --standalone --nproc-per-node 1 -m compress run slim-head --epochs 1 "${common[@]}" --workdir "$work-nccl"
python - "$work-nccl" <<'PY'
import json, sqlite3, sys
rows = [json.loads(r[0]) for r in sqlite3.connect(f"{sys.argv[1]}/results.sqlite").execute("SELECT payload FROM rows")]
backends = {(r.get("distributed") or {}).get("backend") for r in rows if r["compressor"] == "slim-head"}
print("slim-head trained under torchrun with", backends)
sys.exit(0 if backends == {"nccl"} else 1)
PY
step "report"
python -m compress report --workdir "$work" --reports-dir "$out"
step "done: $out/digits.md"
