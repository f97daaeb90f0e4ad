"""How the fake Messages API sends its replies: whole JSON bodies, slow bodies, and SSE streams.

Streams are server-sent events as the real API sends them:
`message_start` (input usage), one `content_block_delta` per token at `stream_tps` tokens per second,
`message_delta` (stop reason, cumulative output usage) and `message_stop`. Faults: `cut` ends the body
after half the tokens with no `message_stop`; `stream_error` sends an `error` event (overloaded) there.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

Send = Callable[[dict[str, Any]], Awaitable[None]]


class Replier:
    def __init__(self, send: Any) -> None:
        self.send = send

    async def __call__(
        self, status: int, payload: Any, extra: dict[str, str] | None = None, raw: bytes | None = None
    ) -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        hs = [(b"content-type", b"application/json"), (b"request-id", b"req_fake")]
        hs += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
        await self.send({"type": "http.response.start", "status": status, "headers": hs})
        await self.send({"type": "http.response.body", "body": data})

    async def slowly(self, body: bytes, pause_s: float, *, whole: bool, give_up_s: float) -> None:
        """Headers at once, then the body after `pause_s` (whole) or one byte every `pause_s`; a trickle
        stops after `give_up_s` (its client is long gone by then) so the server can shut down."""
        await self.send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        pieces = [body] if whole else [body[i : i + 1] for i in range(len(body))]
        started = time.monotonic()
        for piece in pieces:
            await asyncio.sleep(pause_s)
            if not whole and time.monotonic() - started > give_up_s:
                return
            await self.send({"type": "http.response.body", "body": piece, "more_body": True})
        await self.send({"type": "http.response.body", "body": b""})


def tokens_of(text: str, pad_to: int) -> list[str]:
    """The reply as tokens (a word and its space each), padded with filler words up to `pad_to`."""
    words = [w + " " for w in text.split(" ") if w]
    while len(words) < pad_to:
        words.append(f"tok{len(words)} ")
    return words


def padded(answer: dict[str, Any], pad_to: int) -> dict[str, Any]:
    """An unstreamed reply of the same length a streamed one would have."""
    toks = tokens_of(answer["content"][0]["text"] if answer["content"] else "", pad_to)
    return {
        **answer,
        "content": [{"type": "text", "text": "".join(toks)}],
        "usage": {**answer["usage"], "output_tokens": len(toks)},
    }


async def stream_reply(
    send: Send,
    answer: dict[str, Any],
    *,
    tps: float,
    pad_to: int,
    fault: str | None,
    first: Callable[[], object] = lambda: None,
) -> bool:
    """Stream `answer` (a Messages API reply); True if it ended with message_stop. `first` is called as the
    first token goes out (benchmarks time delivery from there)."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"request-id", b"req_fake")],
        }
    )
    usage = answer["usage"]
    start = {**answer, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    await _event(send, "message_start", {"type": "message_start", "message": start})
    await _event(
        send,
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
    toks = tokens_of(answer["content"][0]["text"] if answer["content"] else "", pad_to)
    cut_at = len(toks) // 2 if fault in ("cut", "stream_error") else None
    for i, tok in enumerate(toks):
        if i == cut_at:
            if fault == "stream_error":
                await _event(
                    send, "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
                )
            await send({"type": "http.response.body", "body": b""})
            return False
        await _event(
            send,
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": tok}},
        )
        if i == 0:
            first()
        if tps:
            await asyncio.sleep(1.0 / tps)
    await _event(send, "content_block_stop", {"type": "content_block_stop", "index": 0})
    await _event(
        send,
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": answer["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": len(toks)},
        },
    )
    await _event(send, "message_stop", {"type": "message_stop"})
    await send({"type": "http.response.body", "body": b""})
    return True


async def _event(send: Send, name: str, data: dict[str, Any]) -> None:
    body = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
    await send({"type": "http.response.body", "body": body, "more_body": True})
