"""An HTTP request and response as every runtime hands them to the API, and the one error body."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

MAX_BODY_BYTES = 2 * 1024 * 1024


class ApiRequest(NamedTuple):  # not a dataclass: see core.jobs.outcome
    method: str
    path: str
    headers: Mapping[str, str]  # keys lower-cased by the adapter
    body: bytes = b""
    base_url: str = ""  # a base the platform vouches for (never the client's Host header); "" for relative URLs
    query: Mapping[str, str] = MappingProxyType({})
    streaming: bool = False  # the runtime can send a response as it is produced (SSE follows the job)


class ApiResponse:
    """A JSON body, or `frames` (bytes to send, floats to wait) for SSE and long-poll: a runtime that streams
    sends them as they come; one that buffers takes `payload()`, which waits where the frames say."""

    __slots__ = ("body", "frames", "headers", "media_type", "status")

    def __init__(
        self,
        status: int,
        body: Any,
        headers: dict[str, str] | None = None,
        *,
        frames: Iterator[bytes | float] | None = None,
        media_type: str = "application/json",
    ) -> None:
        self.status = status
        self.body = body
        self.headers = {} if headers is None else headers
        self.frames = frames
        self.media_type = media_type

    def payload(self, sleep: Callable[[float], None] = time.sleep) -> bytes:
        return self.json_bytes() if self.frames is None else b"".join(self.chunks(sleep))

    def chunks(self, sleep: Callable[[float], None] = time.sleep) -> Iterator[bytes]:
        """The frames' bytes in order, waiting (in this thread) where they say: a synchronous runtime's stream."""
        for frame in self.frames or ():
            if isinstance(frame, bytes):
                yield frame
            else:
                sleep(frame)

    def __repr__(self) -> str:
        return f"ApiResponse({self.status}, {self.body!r}, {self.headers!r})"

    def json_bytes(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":")).encode()


def error(status: int, code: str, message: str, field_name: str | None = None, **extra: Any) -> ApiResponse:
    """The one error body: `{"error": {"code", "message", "field"?, ...}}` (schema: openapi.ErrorResponse)."""
    err: dict[str, Any] = {"code": code, "message": message}
    if field_name:
        err["field"] = field_name
    err.update(extra)
    headers = {"www-authenticate": 'Bearer realm="altostratus"'} if status == 401 else {}
    return ApiResponse(status, {"error": err}, headers)
