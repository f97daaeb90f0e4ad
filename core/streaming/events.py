"""What a client of a streaming job reads: Server-Sent Events and long-poll, as frames every runtime carries.

A frame is bytes to send, or a float: seconds to wait before looking again. A runtime that can stream a
response (`alto serve`, Cloud Functions gen2) sends each batch as it comes and follows the job to its end;
one that buffers responses (API Gateway, Azure without its streaming extension) sends the first batch and
ends the response, and the client's EventSource reconnects with `Last-Event-ID`, resuming without gaps or
repeats. Events: `delta` (`id: ATTEMPT:SEQ`, the text written since the previous one), `reset` (a retry
or fallback started a new attempt: drop the text so far), `retract` (the safety policy took back text already
served: drop what was shown; the `delta` after it is the clean text so far), `status`, and `done` (the final job
view). Placeholders of values a policy redacted are restored in what is sent, never in what is stored.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

from core.config.api import StreamConfig
from core.jobs.queries import Queries
from core.models import Job
from core.safety.placeholders import Reveal
from core.streaming.log import Snapshot, StreamLog, source
from core.views import Partial

Frame = bytes | float
JOB_READ_S = 0.5  # the job record (status, result) is re-read at most this often; the text at every poll


class Cursor(NamedTuple):
    attempt: int = 0
    seq: int = 0


CURSOR = re.compile(r"^(?:([0-9]{1,9}):)?([0-9]{1,9})$")
EVENT_ID_RULE = "use ATTEMPT:SEQ as the events' ids give it (e.g. 1:4), or SEQ"


def parse_cursor(value: str | None) -> Cursor:
    """`ATTEMPT:SEQ` (an event id or `after`), or a bare `SEQ` of whichever attempt is current; None or ""
    (an SSE client's empty Last-Event-ID) is the start."""
    if not value:
        return Cursor()
    m = CURSOR.match(value)
    if m is None:
        raise ValueError(f"{value[:40]!r} is not an event id: {EVENT_ID_RULE}")
    return Cursor(int(m.group(1)) if m.group(1) is not None else -1, int(m.group(2)))


def _event(name: str, data: object, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class Feed:
    def __init__(
        self, queries: Queries, streams: StreamLog, config: StreamConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.queries = queries
        self.streams = streams
        self.config = config
        self.clock = clock

    def sse(self, job: Job, last_event_id: str | None, *, follow: bool, wait_s: float) -> Iterator[Frame]:
        """The job's events after `last_event_id`; raises ValueError on a malformed id (before any frame)."""
        cursor = parse_cursor(last_event_id)
        return self._sse(job, cursor, follow, min(wait_s, self.config.max_wait_s))

    def _sse(self, job: Job, cursor: Cursor, follow: bool, wait_s: float) -> Iterator[Frame]:
        yield b"retry: 1000\n\n"
        deadline, status, read_at = self.clock() + wait_s, None, self.clock()
        reveal = self._reveal(job)  # with the job: its sealed values are read when it is, not at every poll
        while True:
            if self.clock() - read_at >= JOB_READ_S or job.status.terminal:
                job, read_at = self.queries.store.get(job.id) or job, self.clock()
                reveal = self._reveal(job)
            out, cursor = self._deltas(self.streams.read(source(job)), cursor, reveal)
            if job.status is not status:
                status = job.status
                out.append(_event("status", {"status": status.value}))
            if job.status.terminal:
                view = self.queries.view_of(job)
                if cursor == Cursor() and view.result:  # nothing was streamed (a cache hit): the text at once
                    out.append(_event("delta", {"text": view.result, "attempt": 0, "seq": 1}, "0:1"))
                out.append(_event("done", view.model_dump(mode="json")))
                yield b"".join(out)
                return
            if out:
                yield b"".join(out)
                if not follow:
                    return
            if self.clock() >= deadline:
                return
            yield self.config.poll_ms / 1000

    def _reveal(self, job: Job) -> Reveal:
        return self.queries.reveal(job) if self.queries.reveal is not None else str

    def _deltas(self, snap: Snapshot | None, cursor: Cursor, reveal: Reveal) -> tuple[list[bytes], Cursor]:
        if snap is None:
            return [], cursor
        out = []
        if cursor.attempt not in (snap.attempt, -1):
            if cursor != Cursor():
                out.append(_event("reset", {"attempt": snap.attempt}))
            cursor = Cursor(snap.attempt, 0)
        start = cursor.seq if cursor.attempt == snap.attempt or cursor.attempt == -1 else 0
        for seq, text in snap.deltas_after(start):
            if seq == snap.retracted and start > 0:  # this client may have shown text that was taken back
                out.append(_event("retract", {"attempt": snap.attempt, "seq": seq}))
            if text:  # a retraction empties the deltas before it
                event = {"text": reveal(text), "attempt": snap.attempt, "seq": seq}
                out.append(_event("delta", event, f"{snap.attempt}:{seq}"))
        return out, Cursor(snap.attempt, max(start, snap.seq))

    def long_poll(self, job: Job, after: str, wait_s: float) -> Iterator[Frame]:
        """The job view once it has text after `after` (or a newer attempt) or is terminal, or at `wait_s`."""
        cursor = parse_cursor(after)
        return self._long_poll(job, cursor, min(wait_s, self.config.max_wait_s))

    def _long_poll(self, job: Job, cursor: Cursor, wait_s: float) -> Iterator[Frame]:
        deadline = self.clock() + wait_s
        while True:
            snap = self.streams.read(source(job)) if job.request.stream else None
            fresh = snap is not None and (
                (snap.attempt != cursor.attempt and cursor.attempt != -1) or snap.seq > cursor.seq
            )
            if fresh or job.status.terminal or self.clock() >= deadline:
                partial = (
                    Partial(text=snap.text, seq=snap.seq, attempt=snap.attempt, retracted_at=snap.retracted or None)
                    if (snap is not None and not job.status.terminal)
                    else None
                )
                view = self.queries.view_of(job, partial)
                yield json.dumps(view.model_dump(mode="json"), separators=(",", ":")).encode()
                return
            yield self.config.poll_ms / 1000
            job = self.queries.store.get(job.id) or job
