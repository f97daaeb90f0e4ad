"""The pull worker's probes: GET /healthz (liveness), /readyz (readiness) and /metrics (Prometheus text) on a small
asyncio server of its own, so a worker needs no web framework and no signal handling but its own."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

Check = Callable[[], tuple[int, dict[str, Any]]]
REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class Probes:
    def __init__(self, checks: dict[str, Check], *, metrics: Callable[[], str]) -> None:
        self.checks = checks
        self.metrics = metrics
        self.port = 0
        self._server: asyncio.base_events.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._answer, host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            method, path, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            status, body, kind = self._route(method, path.split("?", 1)[0])
            writer.write(
                f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError, ConnectionError):
            pass  # a probe that hung up or sent nonsense gets nothing
        finally:
            writer.close()

    def _route(self, method: str, path: str) -> tuple[int, bytes, str]:
        if method != "GET":
            return 405, b'{"error": "GET only"}', "application/json"
        if path == "/metrics":
            return 200, self.metrics().encode(), "text/plain; version=0.0.4; charset=utf-8"
        check = self.checks.get(path)
        if check is None:
            return (
                404,
                json.dumps({"error": f"no {path}; try {', '.join(sorted(self.checks))}"}).encode(),
                "application/json",
            )
        status, body = check()
        return status, json.dumps(body).encode(), "application/json"
