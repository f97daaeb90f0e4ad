"""`StreamWriter`: one attempt's deltas, written to the `StreamLog` at most every `flush_ms`.

The provider's stream calls `add` for each delta (synchronously, on the event loop); the first delta is
written at once, later ones are gathered and written together when `flush_ms` has passed since the last
write, so a client sees text soon and the store sees a bounded number of writes. `close` writes what is
left before the reply is saved, so the streamed text is always the whole text of a finished attempt.

With a safety policy, a `StreamGuard` decides how much of the generated text is written: its hold-back window stays
unwritten until the checks have seen what follows it; a retraction rewrites the text and marks the seq it happened at.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from core.jobs.offload import Offload
from core.safety.stream_guard import StreamGuard
from core.streaming.log import StreamLog


class StreamWriter:
    def __init__(
        self,
        log: StreamLog,
        job_id: str,
        attempt: int,
        *,
        flush_s: float,
        io: Offload,
        clock: Callable[[], float] = time.monotonic,
        guard: StreamGuard | None = None,
    ) -> None:
        self.log = log
        self.job_id = job_id
        self.attempt = attempt
        self.flush_s = flush_s
        self.io = io
        self.clock = clock
        self.text = ""  # what is written (served)
        self.raw = ""  # what was generated: more than `text` while the guard holds some back
        self.guard = guard
        self.retracted = 0  # the seq of the last retraction (0: none)
        self.ends: list[int] = []
        self.pending: list[str] = []
        self.version: int | None = None
        self.writes = 0
        self.lost = False  # another attempt owns the record now: stop writing
        self.first_at: float | None = None  # wall time of the first delta (time to first token)
        self._last = float("-inf")
        self._task: asyncio.Task[None] | None = None

    def add(self, delta: str) -> None:
        if not delta or self.lost:
            return
        if self.first_at is None:
            self.first_at = time.time()
        self.pending.append(delta)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        if self._task is not None:
            await self._task
        await self._flush(final=True)

    async def _run(self) -> None:
        while self.pending and not self.lost:
            wait = self._last + self.flush_s - self.clock()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._flush()

    async def _flush(self, *, final: bool = False) -> None:
        if self.lost or not (self.pending or (final and self.guard is not None)):
            return
        self.raw += "".join(self.pending)
        self.pending.clear()
        text, retract = self._released(final)
        if retract:  # every earlier delta emptied, the clean text as one: clients drop what they showed
            self.ends = [0] * len(self.ends) + [len(text)]
            self.retracted = len(self.ends)
        elif len(text) == len(self.text):
            return  # the guard holds all that is new
        else:
            self.ends.append(len(text))
        self.text = text
        self._last = self.clock()
        version = await self.io(
            self.log.write, self.job_id, self.attempt, self.text, list(self.ends), self.version, self.retracted
        )
        self.writes += 1
        if version is None:
            self.lost = True
        self.version = version

    def _released(self, final: bool) -> tuple[str, bool]:
        if self.guard is None:
            return self.raw, False
        release = self.guard.release(self.raw, final=final)
        return release.text, release.retract
