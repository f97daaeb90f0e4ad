"""The Messages API's shapes the Anthropic provider writes and reads: a conversation's turns (text, tool calls,
tool results) with the prompt cache's breakpoints, the tools offered, and a reply's text and tool calls."""

from __future__ import annotations

import base64
from typing import Any

from core.conversation import Turn, merged
from core.images import Image
from core.tooling import NamedChoice, Tool, ToolCall, ToolChoice, ToolResult

EPHEMERAL = {"type": "ephemeral"}


def messages(
    history: tuple[Turn, ...],
    user: str,
    prefix_chars: int = 0,
    mark_history: bool = False,
    results: tuple[ToolResult, ...] = (),
    images: tuple[Image, ...] = (),
) -> list[Any]:
    """The Messages API's turns: the earlier ones (the last of them marked for the prompt cache, the next turn's
    prefix), then the user turn: its tool results first, then its text (the stable prefix marked, the question
    after it). Plain strings where a turn is text alone and unmarked, as the SDK's own examples send them."""
    out: list[dict[str, Any]] = [{"role": t.role, "content": _content(t)} for t in merged(history)]
    if mark_history and out:
        blocks = _blocks(out[-1]["content"])
        blocks[-1] = {**blocks[-1], "cache_control": EPHEMERAL}
        out[-1]["content"] = blocks
    n = prefix_chars
    text: Any = (
        [{"type": "text", "text": user[:n], "cache_control": EPHEMERAL}, {"type": "text", "text": user[n:]}]
        if n
        else user
    )
    content: Any = (
        [*map(_result, results), *map(_image, images), *(_blocks(text) if user else [])] if results or images else text
    )
    if out and out[-1]["role"] == "user":  # a user turn right before: one turn of both, in order
        out[-1]["content"] = _blocks(out[-1]["content"]) + _blocks(content)
    else:
        out.append({"role": "user", "content": content})
    return out


def _content(t: Turn) -> Any:
    if not (t.calls or t.results or t.images):
        return t.text
    text = [{"type": "text", "text": t.text}] if t.text else []
    if t.results or t.images:  # tool results come first in their turn, then images, then its text
        return [*map(_result, t.results), *map(_image, t.images), *text]
    return [*text, *({"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in t.calls)]


def _result(r: ToolResult) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": r.tool_call_id, "content": r.content, "is_error": r.is_error}


def _image(i: Image) -> dict[str, Any]:
    data = base64.b64encode(i.data).decode()
    return {"type": "image", "source": {"type": "base64", "media_type": i.media_type, "data": data}}


def _blocks(content: Any) -> list[Any]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def tools(offered: tuple[Tool, ...], choice: ToolChoice | None) -> dict[str, Any]:
    """`tools` and `tool_choice` for the request body (nothing when no tool is offered)."""
    if not offered:
        return {}
    specs = [{"name": t.name, "description": t.description, "input_schema": t.parameters} for t in offered]
    kind = {"type": "tool", "name": choice.name} if isinstance(choice, NamedChoice) else {"type": choice or "auto"}
    return {"tools": specs, "tool_choice": kind}


def reply_content(blocks: list[Any]) -> tuple[str, list[ToolCall]]:
    """A reply's text and tool calls, from raw JSON blocks or the SDK's typed ones."""

    def get(b: Any, key: str) -> Any:
        return b.get(key) if isinstance(b, dict) else getattr(b, key, None)

    text = "".join(get(b, "text") or "" for b in blocks if get(b, "type") == "text")
    calls = [
        ToolCall(id=get(b, "id"), name=get(b, "name"), arguments=dict(get(b, "input") or {}))
        for b in blocks
        if get(b, "type") == "tool_use"
    ]
    return text, calls
