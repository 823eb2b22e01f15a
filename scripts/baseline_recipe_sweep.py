"""How the default baseline recipe was chosen: train VGG16 on digits under several recipes and seeds,
record validation accuracy/loss and test accuracy after every epoch, and compare selection rules.

Test accuracy is recorded here only to *evaluate* selection rules after the fact; the suite itself
never looks at the test split while training. Fast on a GPU (about 1 s per epoch on an H100):

    python scripts/baseline_recipe_sweep.py --device cuda --recipes cosine:0:14 constant:0:12 cosine:1:15

A recipe is schedule:augment(0|1):epochs. Prints one JSON line per (recipe, seed).
"""

from __future__ import annotations

import argparse
import json

import torch

from compress.data import datasets
from compress.data.split import make_split
from compress.models import vgg
from compress.training.config import TrainConfig
from compress.training.evaluation import evaluate
from compress.training.loop import make_adam


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--recipes", nargs="+", default=["cosine:0:14"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--lr", type=float, default=1e-4)
    args = ap.parse_args()
    dev = torch.device(args.device)
    cfg = datasets.DataConfig()
    bundle = datasets.load(cfg)
    split = make_split(bundle, cfg)
    for recipe in args.recipes:
        sched_name, aug, epochs = recipe.split(":")
        for seed in args.seeds:
            torch.manual_seed(seed)
            ld = datasets.loaders(bundle, split, 32, seed, augment=aug == "1")
            model = vgg.build(vgg.ModelSpec(num_classes=10)).to(dev)
            opt = make_adam(model, TrainConfig(lr=args.lr))
            sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(epochs))
                     if sched_name == "cosine" else None)
            curve = []
            for epoch in range(1, int(epochs) + 1):
                model.train()
                for x, y in ld.train:
                    x, y = x.to(dev), y.to(dev)
                    opt.zero_grad()
                    torch.nn.functional.cross_entropy(model(x), y).backward()
                    opt.step()
                if sched:
                    sched.step()
                (va, vl), (te, _) = evaluate(model, ld.val, dev), evaluate(model, ld.test, dev)
                curve.append((epoch, va, vl, te))
            by_acc = max(curve, key=lambda c: (c[1], -c[0]))  # first epoch with the best val accuracy
            by_acc_loss = max(curve, key=lambda c: (c[1], -c[2]))  # ties broken by val loss (the suite's rule)
            print(json.dumps({"recipe": recipe, "lr": args.lr, "seed": seed,
                              "test_at_best_val_acc": round(by_acc[3], 4),
                              "test_at_best_val_acc_then_loss": round(by_acc_loss[3], 4),
                              "curve": [[e, round(a, 4), round(loss, 4), round(t, 4)] for e, a, loss, t in curve]}),
                  flush=True)


if __name__ == "__main__":
    main()
