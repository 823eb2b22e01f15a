"""Compressors, one module each, found by discovery: every public module in this folder is imported.

Adding a compressor is adding one file here whose function is decorated with
`@register("name", Config)` (see `_registry.py`); no other file is edited. Modules whose
name starts with an underscore are helpers, not compressors.
"""

from __future__ import annotations

import importlib
import pkgutil

from compress.compressors._registry import (
    Compressor,
    Context,
    Planned,
    PlanOptions,
    Stored,
    get,
    in_plan_order,
    names,
    register,
)

__all__ = ["Compressor", "Context", "PlanOptions", "Planned", "Stored", "get", "in_plan_order", "names", "register"]


def discover() -> list[str]:
    """Import every public module of this package (each one's @register runs); returns their names."""
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
            found.append(info.name)
    return found


discover()
