"""The lease heartbeat: while a provider call is in flight, renew the job's lease so no other delivery
claims it, and keep the call's own deadline inside the lease it actually holds.

A provider's timeout bounds each read, not the call: a reply that trickles in could outlive the lease,
let a redelivery claim the job and pay for the same prompt again. So the call runs under a deadline
of min(whole-call deadline, lease end); each renewal moves the lease (and with it that deadline) on,
up to the invocation's deadline; a renewal that fails leaves the deadline where it was, so the call
is cut before anyone else may take the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from core.errors import ProviderError
from core.jobs.ledger import Ledger
from core.jobs.offload import Offload
from core.logs import log_event
from core.models import Job

T = TypeVar("T")
BEATS_PER_LEASE = 3


class _Cut:
    """One timer that cancels the running task at a loop time, as `asyncio.timeout_at` does, without its
    context manager and state machine: every provider call arms one, so it stays a single timer handle."""

    __slots__ = ("cancelling", "fired", "handle", "loop", "task")

    def __init__(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        task = asyncio.current_task()
        assert task is not None, "Heartbeat.run must run inside a task"
        self.loop, self.task, self.cancelling, self.fired = loop, task, task.cancelling(), False
        self.handle: asyncio.TimerHandle | None = loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self.fired = True
        self.task.cancel()

    def move(self, when: float) -> None:
        if self.handle is not None and not self.fired:
            self.handle.cancel()
            self.handle = self.loop.call_at(when, self._fire)

    def stop(self) -> bool:
        """Disarm (once); True when the cut fired and the task's pending cancellation is the cut's alone."""
        if self.handle is None:
            return False
        self.handle.cancel()
        self.handle = None
        return self.fired and self.task.uncancel() <= self.cancelling


class Heartbeat:
    def __init__(
        self,
        ledger: Ledger,
        job: Job,
        *,
        lease_s: float,
        deadline: float,
        store_io: Offload,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self.job = job
        self.lease_s = lease_s
        self.deadline = deadline  # the invocation's: no lease reaches past it
        self.store_io = store_io
        self.clock = clock
        self._lock: asyncio.Lock | None = None  # made with the beat task: most calls never start one
        self._task: asyncio.Task[None] | None = None

    def margin(self) -> float:
        """How long before the lease ends the call is cut (another delivery may claim it from then on)."""
        return min(1.0, self.lease_s * 0.1)

    def cut_at(self, call_deadline: float) -> float:
        """Wall time the call is cut at: its own deadline or, before that, the margin before the lease ends."""
        return min(call_deadline, (self.job.lease_expires_at or call_deadline) - self.margin())

    async def run(self, call: Awaitable[T], *, call_deadline: float) -> T:
        """Await `call` under min(call_deadline, lease end - margin), renewing the lease meanwhile.
        Raises ProviderError(transport="timeout") when that deadline passes."""
        loop = asyncio.get_running_loop()
        start = self.clock()
        cut_at = self.cut_at(call_deadline)
        cut = _Cut(loop, loop.time() + (cut_at - start))
        try:
            if call_deadline <= cut_at:  # the lease outlasts the call's own deadline: nothing to renew
                return await call
            # most calls end before the first beat is due: a timer, not a task, until then
            first = loop.call_later(self.lease_s / BEATS_PER_LEASE, self._start, cut, call_deadline)
            try:
                return await call
            finally:
                first.cancel()
                await self._stop()
        except asyncio.CancelledError:
            if not cut.stop():
                raise  # not the cut: the caller's cancellation goes on
            raise ProviderError(
                f"the provider call was cut after {self.clock() - start:.1f} s: it passed its "
                "deadline (the provider's timeout_s, the job's lease or the invocation's time)",
                transport="timeout",
            ) from None
        finally:
            cut.stop()

    def _start(self, cut: _Cut, call_deadline: float) -> None:
        self._lock = asyncio.Lock()

        def renewed() -> None:  # the lease moved on: so does the cut
            cut.move(cut.loop.time() + (self.cut_at(call_deadline) - self.clock()))

        self._task = asyncio.ensure_future(self._beat(renewed))

    async def _beat(self, renewed: Callable[[], Any]) -> None:
        assert self._lock is not None
        while True:
            async with self._lock:
                until = min(self.clock() + self.lease_s, self.deadline)
                if until > (self.job.lease_expires_at or 0):  # else the invocation's deadline caps it already
                    if not await self.store_io(self.ledger.renew, self.job, until):
                        log_event("lease.renew_lost", logging.WARNING, job_id=self.job.id)
                        return  # another writer changed the job: the call is cut at the lease it holds
                    renewed()
            await asyncio.sleep(self.lease_s / BEATS_PER_LEASE)

    async def _stop(self) -> None:
        if self._task is None or self._lock is None:
            return
        async with self._lock:  # never while a renewal write is in flight
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
