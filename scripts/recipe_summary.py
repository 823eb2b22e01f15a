"""Summarise reports/baseline_recipe_sweep_h100.jsonl (scripts/baseline_recipe_sweep.py's output) by recipe: the
validation accuracy and loss at the epoch the suite's rule selects, and the test accuracy there, mean and worst over
seeds. docs/commands.md quotes it. Usage: python scripts/recipe_summary.py [file.jsonl]"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict

path = sys.argv[1] if len(sys.argv) > 1 else "reports/baseline_recipe_sweep_h100.jsonl"
by: dict[tuple[str, float], list[tuple[float, float, float]]] = defaultdict(list)
with open(path) as fh:
    for line in fh:
        run = json.loads(line)
        epoch, val_acc, val_loss, test = max(run["curve"], key=lambda c: (c[1], -c[2]))  # val acc, ties: lower loss
        by[(run["recipe"], run["lr"])].append((val_acc, val_loss, test))
print("recipe (schedule:augment:epochs), lr | seeds | val top-1 mean / worst | val loss mean | test top-1 mean / worst")
for (recipe, lr), runs in by.items():
    val, loss, test = ([r[i] for r in runs] for i in range(3))
    print(f"{recipe}, {lr:g} | {len(runs)} | {100 * statistics.mean(val):.2f} / {100 * min(val):.2f} | "
          f"{statistics.mean(loss):.4f} | {100 * statistics.mean(test):.2f} / {100 * min(test):.2f}")
