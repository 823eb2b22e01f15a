"""L1 filter pruning (Li et al. 2017) that removes channels, and seed 004's unstructured variant.

Structured pruning goes through torch-pruning's dependency graph, so when a convolution
loses output channels the next convolution (or the first linear layer, 49 inputs per
channel after the 7x7 pool) loses the matching inputs: the model that comes out is dense
and genuinely smaller. Unstructured pruning only zeroes weights: nonzero parameters fall,
dense MACs, file size and latency do not, and the row shows that.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from compress.compressors._registry import Context, Planned, PlanOptions, Stored, register
from compress.errors import CompressError
from compress.models.vgg import ModelSpec

GLOBAL_MAX_RATIO = 0.9  # global ranking may not take more than this share of any one layer


@dataclass(frozen=True)
class PruningConfig:
    amount: float = field(default=0.3, metadata={"help": "fraction of channels (or weights) to remove, in (0, 1)"})
    scope: Literal["uniform", "global"] = field(default="uniform", metadata={
        "help": "uniform: the same fraction in every layer; global: one ranking across layers "
                f"(no layer loses more than {GLOBAL_MAX_RATIO:.0%})"})
    importance: Literal["l1", "l2", "random"] = field(default="l1", metadata={
        "help": "filter ranking: L1 norm (Li et al.), L2 norm, or random (the control)"})
    method: Literal["structured", "unstructured"] = field(default="structured", metadata={
        "help": "structured removes channels; unstructured zeroes single weights (seed 004's method 3)"})
    keep_classifier: bool = field(default=False, metadata={
        "help": "leave the hidden units of the classifier alone (prune convolutions only)"})
    round_to: int = field(default=1, metadata={
        "help": "keep channel counts at multiples of this (8 suits GPU kernels; 1 = exactly --amount)"})
    per_layer: str | None = field(default=None, metadata={
        "help": "one amount per convolution: `sensitivity` (from `compress sensitivity pruning`, chosen to reach "
                "the MACs of uniform --amount) or a JSON file {\"features.0\": 0.2, ...} (layers not named keep "
                "every filter); --amount still prunes the classifier's hidden units"})
    layer_amounts: tuple[float, ...] = field(default=(), metadata={"cli": False})  # filled from --per-layer

    def __post_init__(self) -> None:
        if not 0.0 < self.amount < 1.0:
            raise CompressError(f"--amount must be between 0 and 1 (exclusive), got {self.amount}")
        if self.round_to < 1:
            raise CompressError(f"--round-to must be >= 1, got {self.round_to}")
        if self.per_layer is not None and (self.method != "structured" or self.scope != "uniform"):
            raise CompressError("--per-layer sets each convolution's amount for structured pruning: drop "
                                "--method unstructured / --scope global")
        if self.per_layer not in (None, "sensitivity") and not self.layer_amounts:  # a file: read it now, not
            from compress.sensitivity.scans import parse_per_layer_file  # after the baseline was measured

            parse_per_layer_file(Path(self.per_layer))
        if any(not 0.0 <= a < 1.0 for a in self.layer_amounts):
            raise CompressError(f"per-layer amounts must be in [0, 1), got {self.layer_amounts}")


def _prunable(model: nn.Module) -> list[nn.Module]:  # noqa: D103
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _capped_global_ratios(model: nn.Module, example: torch.Tensor, importance: Any, amount: float,
                          ignored: list[nn.Module]) -> dict[nn.Module, float]:
    """Global ranking with a per-layer cap, as per-layer ratios.

    torch-pruning (1.6) checks `max_pruning_ratio` only between iterative steps, so one-shot global
    pruning can empty most of a layer (measured: 95% of a layer whose filters were mostly small).
    Here all channels are ranked together, the lowest `amount` of them go, but no layer gives up
    more than GLOBAL_MAX_RATIO; torch-pruning then removes each layer's share.
    """
    import torch_pruning as tp

    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    scored: list[tuple[float, nn.Module]] = []
    sizes: dict[nn.Module, int] = {}
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=[nn.Conv2d, nn.Linear]):
        root = group[0][0].target.module
        scores = importance(group)
        sizes[root] = len(scores)
        scored += [(float(v), root) for v in scores]
    target, taken = int(amount * len(scored)), dict.fromkeys(sizes, 0)
    for _, layer in sorted(scored, key=lambda t: t[0]):
        if sum(taken.values()) >= target:
            break
        if taken[layer] < int(GLOBAL_MAX_RATIO * sizes[layer]):
            taken[layer] += 1
    return {layer: taken[layer] / sizes[layer] for layer in sizes}


def _structured(model: nn.Module, spec: ModelSpec, cfg: PruningConfig, image_size: int) -> tuple[nn.Module, ModelSpec]:
    import torch_pruning as tp

    linears = [m for m in model.classifier.modules() if isinstance(m, nn.Linear)]  # type: ignore[union-attr]
    ignored = linears if cfg.keep_classifier else linears[-1:]  # the class layer keeps its outputs
    importance = {
        "l1": tp.importance.MagnitudeImportance(p=1, group_reduction="first",
                                                normalizer="mean" if cfg.scope == "global" else None),
        "l2": tp.importance.MagnitudeImportance(p=2, group_reduction="first",
                                                normalizer="mean" if cfg.scope == "global" else None),
        "random": tp.importance.RandomImportance(),
    }[cfg.importance]
    model.eval()
    example = torch.randn(1, 3, image_size, image_size)
    ratios = _capped_global_ratios(model, example, importance, cfg.amount, ignored) if cfg.scope == "global" else None
    if cfg.layer_amounts:  # --per-layer: each convolution its own amount, the hidden units --amount
        convs = [m for m in model.features.modules() if isinstance(m, nn.Conv2d)]  # type: ignore[union-attr]
        if len(convs) != len(cfg.layer_amounts):
            raise CompressError(f"{len(cfg.layer_amounts)} per-layer amounts for a model with {len(convs)} "
                                "convolutions")
        ratios = {**dict(zip(convs, cfg.layer_amounts)),
                  **{m: 0.0 if cfg.keep_classifier else cfg.amount for m in linears[:-1]}}
    pruner = tp.pruner.MetaPruner(
        model, example_inputs=example, importance=importance, pruning_ratio=cfg.amount, pruning_ratio_dict=ratios,
        ignored_layers=ignored, round_to=cfg.round_to if cfg.round_to > 1 else None)
    pruner.step()
    convs = [m for m in model.features.modules() if isinstance(m, nn.Conv2d)]  # type: ignore[union-attr]
    widths = tuple(c.out_channels for c in convs)
    hidden = tuple(m.out_features for m in linears[:-1])
    if min(widths + hidden, default=1) < 1:
        raise CompressError(f"--amount {cfg.amount} would leave a layer with no channels: use a smaller amount")
    return model, replace(spec, conv_widths=widths, hidden=hidden)


def _unstructured(model: nn.Module, spec: ModelSpec, cfg: PruningConfig) -> tuple[nn.Module, ModelSpec]:
    layers = _prunable(model)
    if cfg.keep_classifier:
        layers = [m for m in layers if not isinstance(m, nn.Linear)]
    if cfg.scope == "global":
        method = prune.RandomUnstructured if cfg.importance == "random" else prune.L1Unstructured
        prune.global_unstructured([(m, "weight") for m in layers], pruning_method=method, amount=cfg.amount)
    else:
        for m in layers:  # as seed 004: every conv and linear layer, the same fraction
            if cfg.importance == "random":
                prune.random_unstructured(m, "weight", amount=cfg.amount)
            else:  # a single weight's L1 and L2 norms are the same number: |w|
                prune.custom_from_mask(m, "weight", l1_mask(m.weight, cfg.amount))
    # The masks stay on through fine-tuning (weight = weight_orig * mask), so training cannot regrow
    # the zeroed weights; make_permanent() drops them before the model is measured and saved.
    return model, spec


def l1_mask(weight: torch.Tensor, amount: float) -> torch.Tensor:
    """torch's L1Unstructured mask (the round(amount * n) smallest |w| zeroed; ties broken arbitrarily, as
    there) from a linear-time partition instead of a full topk: VGG16's first Linear has 102.8M weights,
    and torch's topk over them took 15 s of a 2-core run (cProfile); a partition is linear in the count."""
    flat = weight.detach().abs().flatten().cpu()
    k = round(amount * flat.numel())
    mask = torch.ones(flat.numel(), dtype=weight.dtype)
    if k > 0:
        kth = float(np.partition(flat.numpy(), k - 1)[k - 1])
        below = flat < kth
        ties = (flat == kth).nonzero().flatten()[: k - int(below.sum())]
        mask[below] = 0
        mask[ties] = 0
    return mask.view_as(weight).to(weight.device)


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold pruning masks into plain weight tensors: zeros stay, masks and hooks go."""
    for m in model.modules():
        if prune.is_pruned(m) and hasattr(m, "weight_mask"):
            prune.remove(m, "weight")
    return model


def _resolve(config: PruningConfig, stored: Stored) -> PruningConfig:
    """--per-layer: the amounts of each convolution, from the stored scan or a JSON file, into the config."""
    if config.per_layer is None:
        return config
    from compress.sensitivity import pruning, scans

    layers = [name for name, _, _ in pruning.convolutions(stored.model)]
    if config.per_layer == "sensitivity":
        scan = scans.load_pruning(scans.scan_path(stored.sensitivity_dir, stored.baseline_key, "pruning"),
                                        stored.baseline_digest)
        costs = pruning.Costs.of(stored.model, stored.image_size)
        amounts = pruning.guided_amounts(scan, costs, config.amount, 0.0 if config.keep_classifier else config.amount)
    else:
        amounts = scans.read_per_layer_file(Path(config.per_layer), layers)
    return replace(config, layer_amounts=tuple(amounts[name] for name in layers))


def _plan(options: PlanOptions) -> list[Planned]:
    """The sweep over `run all --amounts`, L1 and its random control (a pruned epoch costs about (1-a)^2)."""
    return [Planned(f"pruning {a} {importance}", PruningConfig(amount=a, importance=importance),
                    model_cost=(1 - a) ** 2)
            for importance in ("l1", "random") for a in options.amounts]


# A sweep compares L1 against the random-importance control by default (Blalock et al. 2020).
# Six fine-tuning epochs: at amount 0.3 on digits, 3 epochs left L1 2.5 points short, 6 recovered it (README).
@register("pruning", PruningConfig, sweep_defaults={"importance": ("l1", "random")}, finalize=make_permanent,
          finetune_epochs=6, plan=_plan, order=20, resolve=_resolve)
def pruning(model: nn.Module, spec: ModelSpec, config: PruningConfig, ctx: Context) -> tuple[nn.Module, ModelSpec]:
    """Remove the lowest-L1 filters (Li et al. 2017) and their dependent channels, or zero single weights."""
    if config.method == "unstructured":
        return _unstructured(model, spec, config)
    return _structured(model, spec, config, ctx.image_size)
