"""The Messages API's shapes the Anthropic provider writes and reads: a conversation's turns with the prompt cache's
breakpoints, and a reply's text (structured output's forced tool call, read as its input's JSON)."""

from __future__ import annotations

import json
from typing import Any

from core.conversation import Turn, merged
from core.models import ProviderResult

EPHEMERAL = {"type": "ephemeral"}


def messages(history: tuple[Turn, ...], user: str, prefix_chars: int = 0, mark_history: bool = False) -> list[Any]:
    """The Messages API's turns: the earlier ones (the last of them marked for the prompt cache, the next turn's
    prefix), then the user turn (its stable prefix marked, the question after it). Plain strings where nothing is
    marked, as the SDK's own examples send them."""
    out: list[dict[str, Any]] = [{"role": t.role, "content": t.text} for t in merged(history)]
    if mark_history and out:
        out[-1]["content"] = [{"type": "text", "text": out[-1]["content"], "cache_control": EPHEMERAL}]
    n = prefix_chars
    content: Any = (
        [{"type": "text", "text": user[:n], "cache_control": EPHEMERAL}, {"type": "text", "text": user[n:]}]
        if n
        else user
    )
    if out and out[-1]["role"] == "user":  # a user turn right before: one turn of both, in order
        out[-1]["content"] = _blocks(out[-1]["content"]) + _blocks(content)
    else:
        out.append({"role": "user", "content": content})
    return out


def _blocks(content: Any) -> list[Any]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def content_text(blocks: list[Any]) -> tuple[str, bool]:
    """A reply's text (raw JSON blocks or the SDK's typed ones), and whether it was a forced tool's input: the
    structured output mode, whose reply is that input as JSON."""

    def get(b: Any, key: str) -> Any:
        return b.get(key) if isinstance(b, dict) else getattr(b, key, None)

    text = "".join(get(b, "text") or "" for b in blocks if get(b, "type") == "text")
    tool = next((b for b in blocks if get(b, "type") == "tool_use"), None)
    if tool is not None and not text:  # a forced tool's reply is the call alone, with no text before it
        return json.dumps(get(tool, "input"), separators=(",", ":")), True
    return text, False


def answered(result: ProviderResult, forced: bool) -> ProviderResult:
    """A structured reply ends the turn: the forced tool call is how the answer came, not a request for a tool."""
    if forced and result.raw_stop_reason == "tool_use":
        result.stop_reason = "end_turn"
    return result
