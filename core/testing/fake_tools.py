"""How the fake providers answer a request that offers tools, the same way on every API: the choice decides
(`none`: text; a named tool: that one; `any`: the first), and with `auto` a fake calls the first tool unless the
last turn already brings tool results, so a test walks the loop a client runs: ask, call, results, answer. Each
fake also refuses results that answer no call of the turn before them, as the providers do."""

from __future__ import annotations

from typing import Any

from core.providers.offline import shaped

OffSchema = Any  # a callable () -> bool: whether this reply should break its schema (the plans' off_schema)


def pick(tools: list[tuple[str, Any]], choice: str | None, named: str | None, answered: bool) -> tuple[str, Any] | None:
    """The (name, parameters schema) of the tool to call, or None for a text reply."""
    if not tools or choice == "none":
        return None
    if named is not None:
        return next(t for t in tools if t[0] == named)
    if choice in ("any", "required") or not answered:
        return tools[0]
    return None


def arguments(schema: Any, answer: str, off: bool) -> dict[str, Any]:
    """The call's arguments: the answer in the schema's shape, or (told to break it) something the schema refuses."""
    return {"unexpected": True} if off else shaped(schema, answer, schema)


def unanswered(calls_before: set[str], results: set[str]) -> str | None:
    """A result id that no call of the turn before answers (what every provider refuses), or None."""
    stray = sorted(results - calls_before)
    return stray[0] if stray else None
