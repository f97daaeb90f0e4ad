"""The fake Messages API's prompt cache, as Anthropic reports it: a request whose user turn marks a block
with `cache_control` caches everything up to it (with the system prompt) for five minutes; the first such
request pays `cache_creation_input_tokens`, later ones with the same prefix `cache_read_input_tokens`,
and `input_tokens` counts only what comes after the breakpoint."""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

TTL_S = 300.0


class PromptCache:
    def __init__(self) -> None:
        self.entries: dict[str, float] = {}
        self.lock = threading.Lock()

    def apply(self, req: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
        prefix = _prefix(req)
        if prefix is None:
            return usage
        tokens = max(1, len(prefix) // 4)
        key = hashlib.sha256((str(req.get("model")) + prefix).encode()).hexdigest()
        now = time.monotonic()
        with self.lock:
            hit = self.entries.get(key, 0.0) > now
            self.entries[key] = now + TTL_S  # a hit refreshes the entry, as the real cache does
        kind = "cache_read_input_tokens" if hit else "cache_creation_input_tokens"
        return {**usage, "input_tokens": max(1, usage["input_tokens"] - tokens), kind: tokens}


def _prefix(req: dict[str, Any]) -> str | None:
    content = (req.get("messages") or [{}])[0].get("content")
    if not isinstance(content, list):
        return None
    text = str(req.get("system", ""))
    for block in content:
        text += block.get("text", "")
        if block.get("cache_control"):
            return text
    return None
