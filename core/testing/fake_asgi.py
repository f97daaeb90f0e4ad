"""The ASGI plumbing the fake services share: lifespan, reading a request, resetting its connection."""

from __future__ import annotations

import socket
from typing import Any


async def read_request(scope: dict[str, Any], receive: Any, send: Any) -> tuple[bytes, dict[str, str]] | None:
    """The ASGI plumbing every fake shares: answer lifespan (returns None), else read body and headers."""
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return None
    body = bytearray()
    while True:
        msg = await receive()
        body.extend(msg.get("body", b""))
        if not msg.get("more_body"):
            break
    return bytes(body), {k.decode().lower(): v.decode() for k, v in scope["headers"]}


def reset(receive: Any) -> None:
    """Abort the TCP connection with an RST (SO_LINGER 0), as a peer resetting mid-request would."""
    import struct

    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    if transport is None:
        raise ConnectionResetError("fault injected: connection reset")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class Streamed:
    """A streamed body: each piece sent on its own."""

    def __init__(self, pieces: list[bytes], media_type: str = "text/event-stream") -> None:
        self.pieces = pieces
        self.media_type = media_type
