"""BatchNorm over the global batch under torchrun, so that a model with BatchNorm trains the same for any N.

Without it each rank normalises with the statistics of its batch/N images, and DDP broadcasts rank
0's running statistics over the others': the depthwise net, the VGG-11 student and `vgg16_bn`
would train differently with 2 processes than with 1. On CUDA, PyTorch's `SyncBatchNorm` does
the job. It refuses CPU tensors, so on the CPU (gloo) `GlobalBatchNorm` below all-reduces each
channel's sum, sum of squares and count with the differentiable all-reduce of
`torch.distributed.nn`, normalises by the global mean and (biased) variance and updates the
running statistics with the global ones (unbiased variance), as BatchNorm over the whole batch
would. It uses E[x^2] - E[x]^2, which differs from BatchNorm's own arithmetic by float rounding.
What still differs with N: a convolution's bias right before BatchNorm (vgg16_bn has them) does not
change the function, so its gradient is float noise, which Adam turns into steps of size lr that
differ with N; dropout draws its masks per rank; and DistributedSampler repeats a few images when
N does not divide the training split.

Both are swapped in for training (`convert`) and swapped back after it (`restore`), so what is
saved, exported and measured is the plain BatchNorm model.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as tdist
from torch import nn


class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the whole global batch (all ranks, gloo)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not tdist.is_initialized():
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        count = torch.full((1,), x.numel() / c, dtype=x.dtype, device=x.device)
        with warnings.catch_warnings():  # deprecated for a private module's version; this one is public and works
            warnings.simplefilter("ignore", FutureWarning)
            packed = all_reduce(torch.cat([x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3)), count]))
        total, squares, n = packed[:c], packed[c:2 * c], packed[2 * c]
        mean = total / n
        var = (squares / n - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked + 1)
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * var.detach() * n / max(float(n) - 1, 1.0))
                self.num_batches_tracked.add_(1)
        y = (x - mean[None, :, None, None]) * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def _swap(module: nn.Module, make: type) -> nn.Module:
    """`module` as a `make`, sharing its parameters and buffers (training through one updates the other)."""
    out = make(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
    if module.affine:
        out.weight, out.bias = module.weight, module.bias
    out.running_mean, out.running_var = module.running_mean, module.running_var
    out.num_batches_tracked = module.num_batches_tracked
    out.train(module.training)
    return out


def convert(model: nn.Module, cuda: bool) -> bool:
    """Every BatchNorm2d of `model` (in place) synchronised over the job; whether there was any."""
    make = nn.SyncBatchNorm if cuda else GlobalBatchNorm
    found = False
    for name, child in list(model.named_children()):
        if type(child) is nn.BatchNorm2d:
            setattr(model, name, _swap(child, make))
            found = True
        else:
            found = convert(child, cuda) or found
    return found


def restore(model: nn.Module) -> None:
    """Plain BatchNorm2d back (in place), with the trained parameters and statistics."""
    for name, child in list(model.named_children()):
        if isinstance(child, (nn.SyncBatchNorm, GlobalBatchNorm)):
            setattr(model, name, _swap(child, nn.BatchNorm2d))
        else:
            restore(child)
