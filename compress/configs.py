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
