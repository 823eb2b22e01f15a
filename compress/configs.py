"""Typed configs (frozen dataclasses) are both settings and flags: which of their fields a user sets.

Shared by the command line (one flag per setting) and the reports (a row's settings shown where
they differ from the defaults), so both agree on what counts as a setting.
"""

from __future__ import annotations

from dataclasses import Field, fields
from typing import Any


def settings_of(cls: type) -> list[Field[Any]]:
    """The fields of a config the user sets: not facts (init=False), not values filled in from others (cli=False)."""
    return [f for f in fields(cls) if f.init and f.metadata.get("cli") is not False]


NEW = "recorded_if_set"  # field metadata: a field added after rows were stored, left out of the record at its default


def record(obj: Any) -> dict[str, Any]:
    """A config as rows and caches store it (dataclasses.asdict), without the fields added later while they hold
    their defaults: the record, and so every config hash and cache key built from it, stays what it was."""
    out = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get(NEW) and value == f.default:
            continue
        out[f.name] = record(value) if hasattr(value, "__dataclass_fields__") else _plain(value)
    return out


def _plain(value: Any) -> Any:
    from dataclasses import asdict, is_dataclass

    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
