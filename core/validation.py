"""Validation helpers the boundary models share: the context of a record read back from our own store,
and the measure of a JSON value's nesting."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationInfo

STORED = {"stored": True}  # validation context of a record read back from our own store (see `checked`)


def checked(info: ValidationInfo) -> bool:
    """Whether a request's bounds are checked: always at the boundary; not on records we wrote ourselves,
    which passed them when submitted (types are still validated on every read)."""
    return not (info.context and info.context.get("stored"))


def json_depth(value: Any) -> int:
    """Nesting depth of a JSON-like value (a scalar is 0, `{}` is 1), computed without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            stack.extend((child, d + 1) for child in v.values())
            deepest = max(deepest, d + 1)
        elif isinstance(v, list):
            stack.extend((child, d + 1) for child in v)
            deepest = max(deepest, d + 1)
    return deepest
