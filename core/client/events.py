"""A streaming job's events as the client reads them from `GET /v1/jobs/{id}/events` (Server-Sent Events)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Literal

from pydantic import BaseModel, ConfigDict

from core.views import JobView


class StreamEvent(BaseModel):
    """`delta`: more text (`text`, with its `attempt` and `seq`); `reset`: a retry or fallback began a new attempt,
    so drop the text shown so far; `status`: the job's status changed; `done`: the job ended (`view`)."""

    model_config = ConfigDict(frozen=True)

    event: Literal["delta", "reset", "status", "done"]
    id: str | None = None
    text: str | None = None
    attempt: int | None = None
    seq: int | None = None
    status: str | None = None
    view: JobView | None = None


def parse_sse(lines: Iterable[str]) -> Iterator[StreamEvent]:
    """Events from an SSE body's lines (the `retry:` hint and unknown events are skipped)."""
    fields: dict[str, str] = {}
    for raw in lines:
        line = raw.rstrip("\r\n")
        if line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
            continue
        if (event := _event(fields)) is not None:
            yield event
        fields = {}


def _event(fields: dict[str, str]) -> StreamEvent | None:
    kind, data = fields.get("event"), json.loads(fields["data"]) if "data" in fields else {}
    if kind == "done":
        return StreamEvent(event="done", view=JobView.model_validate(data), status=data.get("status"))
    if kind not in ("delta", "reset", "status"):
        return None
    values = {k: data[k] for k in ("text", "attempt", "seq", "status") if k in data}
    return StreamEvent.model_validate({"event": kind, "id": fields.get("id"), **values})
