"""Finalizing a job whose reply is saved: its verdict (citations, usage and cost, output checks), the result
write and, when that write ends the job, its aftermath. Also what a redelivery runs when it finds the reply
already saved, so a crash after the call never pays twice."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from core.chunks import ContextChunk
from core.jobs.aftermath import Aftermath
from core.jobs.ledger import Ledger, Wrote
from core.jobs.offload import Offload
from core.jobs.outcome import Outcome, raced
from core.jobs.prepare import Preparer
from core.jobs.verdict import Verdict, Verdicts
from core.logs import log_event
from core.models import Job, JobStatus
from core.retry import jittered
from core.safety.moderation import Pending

MODERATION_WAIT_S = 2.0  # how soon an answer waiting for its moderation looks again


class Finalizer:
    def __init__(
        self,
        ledger: Ledger,
        verdicts: Verdicts,
        preparer: Preparer,
        aftermath: Aftermath,
        *,
        store_io: Offload,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self.verdicts = verdicts
        self.preparer = preparer  # a redelivery's chunks, by id
        self.aftermath = aftermath
        self.store_io = store_io
        self.clock = clock

    async def finalize(
        self, job: Job, chunks: list[ContextChunk] | None = None, written: Verdict | None = None
    ) -> Outcome:
        """The result write for a job whose reply is saved, or (`written`) what follows the one write that
        saved the reply and its result together (its aftermath ran with that write)."""
        assert job.reply is not None
        verdict = written
        if verdict is None:
            if self.verdicts.safety is not None and self.verdicts.held(job):
                judged = await self.verdicts.safety.moderated(job, "output", job.reply.text)
                if isinstance(judged, Pending):
                    return await self._wait(job, judged.reason)
            if chunks is None:  # a redelivery after the reply was saved: the same chunks, by id
                chunks = await self.preparer.arefetch(job.tenant, job.request, job.context_chunks)
            verdict = self.verdicts.of(job, job.reply.text, chunks)
            if not await self.store_io(self._finish, job, verdict):
                current = await self.store_io(self.ledger.load, job.id)
                if current is not None and current.status.terminal:
                    return Outcome("ack", status=current.status, detail="finished by another delivery")
                return raced("result write lost a race")
        if verdict.rule is not None:
            log_event("job.guardrail_failed", logging.WARNING, rule=verdict.rule)
        self._log(job)
        return Outcome("ack", status=job.status)

    async def _wait(self, job: Job, reason: str) -> Outcome:
        """Back to the queue (the reply kept) until the answer's moderation is done; no attempt is spent."""
        delay = jittered(MODERATION_WAIT_S)
        if not await self.store_io(self.ledger.defer, job, until=self.clock() + delay, reason=reason):
            return raced(delay_s=1.0)
        return Outcome("defer", delay_s=delay, status=JobStatus.queued, detail=reason)

    def _finish(self, job: Job, verdict: Verdict) -> Wrote:
        wrote = self.ledger.finish(job, verdict)
        self.aftermath.ended(wrote, job)
        return wrote

    def _log(self, job: Job) -> None:
        log_event(
            "job." + job.status.value,
            model=job.route.model if job.route else None,
            input_tokens=job.usage.input_tokens,
            output_tokens=job.usage.output_tokens,
            cost_usd=job.usage.cost_usd,
            attempts=len(job.attempts),
            citations=len(job.citations),
            latency_ms=round(((job.finished_at or self.clock()) - job.created_at) * 1000, 1),
        )
