"""Knowledge distillation into a small student (seed 004's method 5, finished).

Seed 004 defines a student and names the loss but has no training loop. Here the student
learns from the stored baseline's softened outputs (Hinton et al. 2015) and, every time, the
same student is also trained without the teacher on the same data for the same epochs: the
KD gain is the difference between those two rows, not between the student and the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from compress.compressors._registry import Context, Planned, PlanOptions, register
from compress.errors import CompressError
from compress.models.vgg import VGG11_WIDTHS, ModelSpec, build, separable_spec
from compress.training.kd import KDOptions


@dataclass(frozen=True)
class DistillationConfig(KDOptions):
    kd: bool = field(default=True, metadata={
        "help": "learn from the teacher; --no-kd trains the student on labels alone (the control)"})
    student: Literal["vgg11", "seed-student", "depthwise"] = field(default="vgg11", metadata={
        "help": "vgg11: VGG-11 with BN at --width; seed-student: seed 004's two-conv net; "
                "depthwise: the depthwise-separable VGG16 (gap head)"})
    width: float = field(default=0.25, metadata={"help": "channel multiplier of the vgg11 student"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.width <= 1.0:
            raise CompressError(f"--width must be in (0, 1], got {self.width}")


def student_spec(spec: ModelSpec, config: DistillationConfig, image_size: int) -> ModelSpec:
    c = spec.num_classes
    if config.student == "seed-student":
        return ModelSpec(arch="seed-student", num_classes=c, conv_widths=(32, 64), head="mlp", hidden=(256,),
                         dropout=0.0, input_size=image_size)
    if config.student == "depthwise":
        return separable_spec(spec, "gap", (), keep_first=False)
    widths = tuple(max(1, round(w * config.width)) for w in VGG11_WIDTHS)
    return ModelSpec(arch="vgg11_bn", num_classes=c, conv_widths=widths, head="gap", hidden=())


def _plan(options: PlanOptions) -> list[Planned]:
    return [Planned("distillation vgg11 (+ control)", DistillationConfig(), model_cost=0.1),
            Planned("distillation seed-student (+ control)", DistillationConfig(student="seed-student"),
                    model_cost=0.05)]


@register("distillation", DistillationConfig, finetune_epochs=12, finetune_lr=1e-3, plan=_plan, order=50)
def distillation(model: nn.Module, spec: ModelSpec, config: DistillationConfig,
                 ctx: Context) -> tuple[nn.Module, ModelSpec]:
    """Train a small student on the baseline's soft outputs (Hinton et al. 2015), beside its no-teacher control."""
    if config.student == "seed-student" and ctx.image_size % 4:
        raise CompressError(f"seed-student needs an image size divisible by 4, got {ctx.image_size}")
    new_spec = student_spec(spec, config, ctx.image_size)
    return build(new_spec), new_spec
