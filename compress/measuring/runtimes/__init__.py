"""Runtimes, one module each: where a model is timed (PyTorch eager, torch.compile, ONNX Runtime, OpenVINO, CUDA).

Adding a runtime is adding one file here that decorates its timing function with
`@register(...)` (see `_registry.py`); the harness, the `--runtimes` flag, the stored rows and
the report all read the registry, so no other file is edited.
"""

from __future__ import annotations

from compress.measuring.runtimes._registry import (
    OLD_KEYS,
    Runtime,
    defaults,
    discover,
    get,
    help_text,
    in_order,
    keys,
    label,
    name,
    register,
)

__all__ = ["OLD_KEYS", "Runtime", "defaults", "discover", "get", "help_text", "in_order", "keys", "label", "name",
           "register"]
