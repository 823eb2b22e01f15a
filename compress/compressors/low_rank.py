"""Low-rank head: each dense layer W (out x in) becomes two layers of rank r (in -> r -> out), from its truncated SVD.

Fast R-CNN (Girshick 2015) factorised VGG16's fc6 to rank 1024 and fc7 to rank 256 and cut detection time by over
30% for 0.3 mAP, without fine-tuning. It needs no training, so it is the cheapest method to try, and the one
head method that keeps the trained head's knowledge. The SVD is taken through the Gram matrix (W W^T, or W^T W,
whichever is smaller): the top-r eigenvectors give the best rank-r approximation, and for fc6
(4096 x 25088) that takes about 7 s here (issue 28 reports over a minute for a full SVD on this machine).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from compress.compressors._registry import Context, Stored, register
from compress.errors import CompressError
from compress.models.vgg import ModelSpec, linear

FAST_RCNN = (4, 16)  # fc6 at a quarter of its outputs, fc7 at a sixteenth: 1024 and 256 for VGG16's 4096


@dataclass(frozen=True)
class LowRankConfig:
    rank: tuple[int, ...] = field(default=(), metadata={
        "help": "rank of each factorised dense layer, first to last, comma-separated (default: Fast R-CNN's, a "
                "quarter of fc6's outputs and a sixteenth of fc7's: 1024 and 256 for VGG16)"})
    energy: float | None = field(default=None, metadata={
        "help": "instead of --rank: the smallest rank keeping this share of each layer's squared singular values"})
    last: bool = field(default=False, metadata={"help": "also factorise the class layer (default: kept dense)"})
    layer_ranks: tuple[int, ...] = field(default=(), metadata={"cli": False})  # the ranks used, filled in

    def __post_init__(self) -> None:
        if any(r <= 0 for r in self.rank):
            raise CompressError(f"--rank values must be positive, got {','.join(map(str, self.rank))}")
        if self.energy is not None and not (math.isfinite(self.energy) and 0 < self.energy <= 1):
            raise CompressError(f"--energy must be a share in (0, 1], got {self.energy}")
        if self.energy is not None and self.rank:
            raise CompressError("--rank and --energy both choose the ranks: pass one of them")


def _dense(model: nn.Module) -> list[tuple[int, nn.Linear]]:
    """(classifier index, layer) of every dense (not yet factorised) layer of the head."""
    return [(i, m) for i, m in enumerate(model.classifier) if isinstance(m, nn.Linear)]


def _factors(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A: rank x in, B: out x rank, eigenvalues descending) with B @ A the best rank-r approximation of weight."""
    out_f, in_f = weight.shape
    # float64 where it is cheap; float32 for VGG16's 4096-wide layers (fc6: 7 s instead of 15 s here), whose top
    # singular directions float32 resolves (only directions below 1e-7 of the largest blur, and they are cut anyway)
    w = weight.detach().to(torch.float64 if min(out_f, in_f) <= 1024 else torch.float32)
    if out_f <= in_f:
        values, vectors = torch.linalg.eigh(w @ w.T)  # ascending
        u = vectors.flip(1)[:, :rank]
        return (u.T @ w).float(), u.float(), values.flip(0).clamp_min(0)
    values, vectors = torch.linalg.eigh(w.T @ w)
    v = vectors.flip(1)[:, :rank]
    return v.T.float(), (w @ v).float(), values.flip(0).clamp_min(0)


def rank_for_energy(eigenvalues: torch.Tensor, energy: float) -> int:
    """The smallest rank whose squared singular values (the Gram matrix's eigenvalues) keep `energy` of the total."""
    share = torch.cumsum(eigenvalues, 0) / eigenvalues.sum().clamp_min(1e-30)
    return int(torch.searchsorted(share, torch.tensor(energy - 1e-12, dtype=share.dtype)).item()) + 1


def _ranks(layers: list[tuple[int, nn.Linear]], config: LowRankConfig) -> list[int]:
    if config.rank:
        if len(config.rank) != len(layers):
            raise CompressError(f"--rank lists {len(config.rank)} rank(s) for {len(layers)} dense layer(s) "
                                f"({', '.join(f'classifier.{i}' for i, _ in layers)}): one each")
        return list(config.rank)
    if config.energy is not None:
        return [rank_for_energy(_factors(m.weight, 1)[2], config.energy) for _, m in layers]
    return [max(1, m.out_features // FAST_RCNN[min(k, len(FAST_RCNN) - 1)]) for k, (_, m) in enumerate(layers)]


def _resolve(config: LowRankConfig, stored: Stored) -> LowRankConfig:
    """The ranks the model will get, in the row (--energy and the default depend on the model)."""
    layers = _dense(stored.model)
    return replace(config, layer_ranks=tuple(_ranks(layers if config.last else layers[:-1], config)))


@register("low-rank", LowRankConfig, finetune_epochs=0, order=15, resolve=_resolve, head_only=True)
def low_rank(model: nn.Module, spec: ModelSpec, config: LowRankConfig, ctx: Context) -> tuple[nn.Module, ModelSpec]:
    """Factorise the dense head by truncated SVD (Fast R-CNN: fc6 to rank 1024, fc7 to 256); no training needed."""
    if any(spec.head_ranks):
        raise CompressError("the model's head is low-rank already: compress its source instead (--from that run)")
    layers = _dense(model)
    chosen = layers if config.last else layers[:-1]
    if not chosen:
        raise CompressError("the model has no dense hidden layer to factorise (a global-average-pool head): pass "
                            "--last to factorise the class layer, or start from a model with an MLP head")
    ranks = list(config.layer_ranks) or _ranks(chosen, config)
    head_ranks = [0] * len(layers)
    for k, ((index, layer), rank) in enumerate(zip(chosen, ranks)):
        in_f, out_f = layer.in_features, layer.out_features
        if rank * (in_f + out_f) >= in_f * out_f:
            raise CompressError(f"rank {rank} for classifier.{index} ({in_f} -> {out_f}) saves no parameters: "
                                f"pass a rank below {in_f * out_f // (in_f + out_f)}")
        a, b, _ = _factors(layer.weight, rank)
        factored = linear(in_f, out_f, rank)
        with torch.no_grad():
            factored[0].weight.copy_(a)
            factored[1].weight.copy_(b)
            factored[1].bias.copy_(layer.bias)
        model.classifier[index] = factored
        head_ranks[k] = rank
    return model, replace(spec, head_ranks=tuple(head_ranks))
