"""The HTTP API as an ASGI app (what uvicorn serves for `alto serve`): request and response translation,
streaming, the console's static pages, `/metrics` and the workers' `/healthz`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from core.console import asset as console_asset
from core.entrypoints.http import MAX_BODY_BYTES, Api, ApiRequest, ApiResponse, error, respond
from core.logs import log_event


def asgi_app(
    api: Api,
    *,
    on_startup: Any = None,
    on_shutdown: Any = None,
    metrics_text: Callable[[], str] | None = None,
    health: Callable[[], tuple[int, dict[str, Any]]] | None = None,
) -> Any:
    """`metrics_text`: what `GET /metrics` serves (Prometheus text), unauthenticated like a scrape target;
    None when `observability.prometheus` is off. `health`: what `GET /healthz` answers when the process also
    runs workers (503 while none runs)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await _lifespan(receive, send, on_startup, on_shutdown)
        if scope["type"] != "http":
            return
        if scope["path"] == "/metrics" and scope["method"] == "GET" and metrics_text is not None:
            return await _plain(send, 200, metrics_text(), "text/plain; version=0.0.4; charset=utf-8")
        if scope["path"] == "/healthz" and scope["method"] == "GET" and health is not None:
            status, health_body = health()
            return await _plain(send, status, json.dumps(health_body), "application/json")
        if scope["method"] == "GET" and (page := console_asset(scope["path"])) is not None:
            return await _plain(send, 200, page[0], page[1])  # the console: static, public, no data in it
        body = await _read_body(receive)
        if body is None:  # the client went away before its body was complete: nothing is processed
            log_event("request.aborted", method=scope["method"], path=scope["path"])
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        req = ApiRequest(
            method=scope["method"],
            path=scope["path"],
            headers=headers,
            body=body,
            base_url=_own_url(scope),
            query=dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)),
            streaming=True,
        )
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) != len(body) and len(body) <= MAX_BODY_BYTES:
            resp = error(
                400,
                "incomplete_body",
                f"the body has {len(body)} bytes but Content-Length says {declared}; "
                "nothing was stored: send the whole body",
                "(body)",
            )
        else:  # in a thread: a submit's SQLite write may wait for another process's lock, never on the loop
            resp = await asyncio.to_thread(respond, api, req)
        if resp.frames is not None and resp.media_type == "text/event-stream":
            return await _stream(resp, send)
        payload = resp.json_bytes() if resp.frames is None else await _gathered(resp)
        await _plain(send, resp.status, payload, resp.media_type, resp.headers)

    return app


async def _lifespan(receive: Any, send: Any, on_startup: Any, on_shutdown: Any) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            if on_startup:
                await on_startup()
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            if on_shutdown:
                await on_shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _plain(send: Any, status: int, text: str | bytes, media_type: str, headers: Any = None) -> None:
    """A whole (not streamed) response: its length, its type and any other headers."""
    body = text.encode() if isinstance(text, str) else text
    raw = [(b"content-type", media_type.encode()), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _gathered(resp: ApiResponse) -> bytes:
    """A long-poll's frames: waits on the event loop, never in a thread, so thousands can wait at once."""
    assert resp.frames is not None
    out = bytearray()
    for frame in resp.frames:
        if isinstance(frame, bytes):
            out += frame
        else:
            await asyncio.sleep(frame)
    return bytes(out)


async def _stream(resp: ApiResponse, send: Any) -> None:
    """Server-Sent Events as they come; a client that goes away ends the loop at the next send."""
    assert resp.frames is not None
    headers = [(b"content-type", b"text/event-stream")] + [(k.encode(), v.encode()) for k, v in resp.headers.items()]
    await send({"type": "http.response.start", "status": resp.status, "headers": headers})
    try:
        for frame in resp.frames:
            if isinstance(frame, bytes):
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            else:
                await asyncio.sleep(frame)
        await send({"type": "http.response.body", "body": b""})
    except OSError:  # the client disconnected
        return


async def _read_body(receive: Any) -> bytes | None:
    """The request body, or None if the client disconnected first (an aborted upload must not become a job)."""
    body = bytearray()
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return None
        body.extend(msg.get("body", b""))
        if len(body) > MAX_BODY_BYTES or not msg.get("more_body"):
            return bytes(body)


def _own_url(scope: dict[str, Any]) -> str:
    """The address this server listens on, for status URLs: never the client's Host header (set
    `server.public_url` when clients reach it through another name)."""
    host, port = scope.get("server") or ("localhost", None)
    host = "localhost" if host in ("0.0.0.0", "::", "") else (f"[{host}]" if ":" in host else host)
    return f"{scope.get('scheme', 'http')}://{host}" + (f":{port}" if port else "")
