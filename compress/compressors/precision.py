"""Half precision (fp16 or bf16): the first "compression" most GPU users try, measured where it runs.

The weights are cast and stored in half precision (half the bytes), and the row is timed and
scored with the half-precision model itself: its accuracy is fp16's (or bf16's), not the fp32
model's. Callers keep feeding fp32 images; a cast at the input is part of the deployed model.
A CPU without native fp16 arithmetic runs fp16 convolutions on slow fallback kernels: the
row shows that slowdown rather than hiding it. Not in `run all` (see the registration).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from compress.compressors._registry import Context, register
from compress.models.artifact import Artifact
from compress.models.checkpoints import save_checkpoint
from compress.models.vgg import HALF, Cast, ModelSpec

DTYPES = HALF


@dataclass(frozen=True)
class PrecisionConfig:
    dtype: Literal["fp16", "bf16"] = field(default="fp16", metadata={
        "help": "fp16 (IEEE half; fast on GPUs, slow fallback on most CPUs) or bf16 (fp32's range; fast on CPUs "
                "with AVX512_BF16 or AMX and on recent GPUs)"})


# No `run all` step: on a CPU without native fp16, timing VGG16 in fp16 takes minutes (3882 ms against fp32's
# 182 ms per batch-32 call on the 2-core dev box, reports/precision); run it on its own: `run precision --dtype fp16`.
@register("precision", PrecisionConfig, finetune=False, order=35, plan=lambda options: [])
def precision(model: nn.Module, spec: ModelSpec, config: PrecisionConfig, ctx: Context) -> Artifact:
    """Cast the weights to fp16 or bf16; timed and scored in that precision on every runtime that runs it."""
    half = Cast(model.cpu().eval(), DTYPES[config.dtype])
    path = ctx.run_dir / "model.pt"
    save_checkpoint(half.model, spec, path, extra={"precision": config.dtype})
    return Artifact(backend=f"pytorch {config.dtype}", file=path, module=half, gpu_note=None,
                    dtype=str(DTYPES[config.dtype]).removeprefix("torch."))
