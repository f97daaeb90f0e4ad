"""The fake Messages API's prompt cache, as Anthropic reports it: a request that marks a block with
`cache_control` (in any turn) caches everything up to it, the system prompt first, for five minutes. A later
request reads the longest cached prefix ending at one of its block boundaries before its last mark
(`cache_read_input_tokens`) and writes the rest up to the mark (`cache_creation_input_tokens`); `input_tokens`
counts only what comes after the breakpoint. So a conversation whose last earlier turn is marked reads the
previous turn's prefix and writes only the new turns."""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

LOOKBACK = 20  # block boundaries before a breakpoint the API looks back for a cached prefix
TTL_S = 300.0


class PromptCache:
    def __init__(self) -> None:
        self.entries: dict[str, float] = {}
        self.lock = threading.Lock()

    def apply(self, req: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
        """Cache reads and writes as Anthropic reports them: each marked prefix is written; a request reads the
        longest prefix cached at any of the 20 block boundaries up to its last mark, and writes the rest."""
        bounds = _boundaries(req)
        marks = [i for i, (_, marked) in enumerate(bounds) if marked]
        if not marks:
            return usage
        last, model, now = marks[-1], str(req.get("model")), time.monotonic()
        with self.lock:
            hit = next(
                (
                    len(bounds[i][0])
                    for i in range(last, max(-1, last - LOOKBACK), -1)
                    if self._live(model, bounds[i][0], now)
                ),
                0,
            )
            for i in marks:
                self.entries[_key(model, bounds[i][0])] = now + TTL_S  # a hit refreshes the entry, as the real one
        read, written = hit // 4, max(0, (len(bounds[last][0]) - hit) // 4)
        out = {**usage, "input_tokens": max(1, usage["input_tokens"] - read - written)}
        if read:
            out["cache_read_input_tokens"] = read
        if written:
            out["cache_creation_input_tokens"] = written
        return out

    def _live(self, model: str, prefix: str, now: float) -> bool:
        return self.entries.get(_key(model, prefix), 0.0) > now


def _key(model: str, prefix: str) -> str:
    return hashlib.sha256((model + prefix).encode()).hexdigest()


def _boundaries(req: dict[str, Any]) -> list[tuple[str, bool]]:
    """The request's text up to the end of each content block, in order, and whether that block is marked."""
    text, out = str(req.get("system", "")), []
    for message in req.get("messages") or []:
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for block in blocks:
            text += str(block.get("text") or block.get("content") or block.get("input") or "")
            out.append((text, bool(block.get("cache_control"))))
    return out
