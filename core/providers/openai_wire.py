"""Chat Completions' shapes the OpenAI-compatible provider writes and reads: a conversation's turns (assistant
`tool_calls`, `tool` messages for results), the tools offered, and a reply message's text and tool calls."""

from __future__ import annotations

import base64
import json
from typing import Any

from core.conversation import Turn, turns
from core.images import Image
from core.tooling import NamedChoice, Tool, ToolCall, ToolChoice, ToolResult

CHOICES = {"auto": "auto", "any": "required", "none": "none"}


def chat_messages(
    system: str, history: tuple[Turn, ...], user: str, results: tuple[ToolResult, ...], images: tuple[Image, ...] = ()
) -> list[Any]:
    out: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for t in turns(history, user, results, images):
        out += _messages(t)
    return out


def _messages(t: Turn) -> list[dict[str, Any]]:
    """One turn as Chat Completions messages: results are `tool` messages of their own, before the turn's text."""
    if t.role == "assistant" and t.calls:
        calls = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
            for c in t.calls
        ]
        return [{"role": "assistant", "content": t.text or None, "tool_calls": calls}]
    out = [{"role": "tool", "tool_call_id": r.tool_call_id, "content": r.content} for r in t.results]
    if t.images:  # images as data URLs, before the turn's text
        urls = [
            {
                "type": "image_url",
                "image_url": {"url": f"data:{i.media_type};base64,{base64.b64encode(i.data).decode()}"},
            }
            for i in t.images
        ]
        return [*out, {"role": t.role, "content": [*urls, *([{"type": "text", "text": t.text}] if t.text else [])]}]
    return out + ([{"role": t.role, "content": t.text}] if t.text or not t.results else [])


def tools(offered: tuple[Tool, ...], choice: ToolChoice | None) -> dict[str, Any]:
    if not offered:
        return {}
    specs = [
        {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
        for t in offered
    ]
    picked: Any = (
        {"type": "function", "function": {"name": choice.name}}
        if isinstance(choice, NamedChoice)
        else CHOICES[choice or "auto"]
    )
    return {"tools": specs, "tool_choice": picked}


def reply_message(message: dict[str, Any]) -> tuple[str, list[ToolCall]]:
    """A reply message's text and tool calls (their arguments arrive as JSON text; ValueError when they aren't)."""
    calls = [
        ToolCall(id=c["id"], name=c["function"]["name"], arguments=json.loads(c["function"]["arguments"] or "{}"))
        for c in message.get("tool_calls") or []
    ]
    return message.get("content") or "", calls
