"""What one invocation decides once, from its flags, and hands down: the `Session`.

Before it existed the same nine values (workspace, data, arch, baseline recipe, latency
settings, device, command, keep-onnx, resume) were threaded through every call by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from compress.data.datasets import DataConfig
from compress.errors import CompressError
from compress.measuring.timing import REPORT_BATCH, LatencyConfig
from compress.scaleout import dist
from compress.store.sqlite import Store
from compress.store.workspace import Workspace
from compress.training.config import TrainConfig


def pick_device(name: str) -> torch.device:
    """The device of this process: under torchrun, this rank's GPU (or the CPU), after joining the job."""
    return dist.start(name)


@dataclass(frozen=True)
class BaselineSource:
    """Where the baseline comes from: trained here (from scratch or ImageNet weights), or your checkpoint."""

    weights: Path | None = None  # --baseline-weights: your trained checkpoint is the baseline
    trust_pickle: bool = False  # allow a fully pickled model file (unpickling runs code)
    arch: str | None = None  # --arch as given (None: not given), checked against --baseline-weights
    pretrained: str | None = None  # --pretrained: "imagenet" (torchvision's file) or a path; None: from scratch
    download: bool = False  # let --pretrained download torchvision's file
    freeze_features: bool = False  # train the head only (seed 000)

    def __post_init__(self) -> None:
        if self.weights is not None and self.pretrained is not None:
            raise CompressError("--baseline-weights and --pretrained both name a baseline: pass one of them")
        if self.freeze_features and self.pretrained is None:
            raise CompressError("--freeze-features trains the head of an ImageNet-pretrained baseline: add "
                                "--pretrained (a random-weight feature extractor frozen would learn nothing)")

    @property
    def imported(self) -> bool:
        return self.weights is not None

    def tag(self) -> str:
        """Part of the baseline cache folder's name, so each source has a cache of its own."""
        if self.pretrained is None:
            return ""
        return "-imagenet" + ("-frozen" if self.freeze_features else "")


@dataclass(frozen=True)
class Session:
    """One invocation's settings, shared by every step it runs."""

    workspace: Workspace
    data: DataConfig = field(default_factory=DataConfig)
    arch: str = "vgg16"
    baseline_train: TrainConfig = field(default_factory=TrainConfig)  # only used when no baseline is cached
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    command: str = ""  # the command line, stored in every row
    keep_onnx: bool = False  # --export-onnx: keep each measured model's ONNX file in its run folder
    resume: bool = False  # --resume: continue interrupted trainings of the same configuration
    retrain: bool = False  # `baseline --retrain`: train the baseline again even if one is cached
    baseline: BaselineSource = field(default_factory=BaselineSource)
    report_batch: int = REPORT_BATCH

    @property
    def store(self) -> Store:
        return self.workspace.store
