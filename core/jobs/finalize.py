"""Finalizing a job whose reply is saved: citations, usage and cost, output checks, the result write,
then queueing its callback. Also what a redelivery runs when it finds the reply already saved, so a
crash after the call never pays twice."""

from __future__ import annotations

import logging
import time
from typing import Awaitable, Callable

from core.chunks import ContextChunk
from core.config.worker import Settings
from core.errors import GuardrailViolation
from core.guardrails import check_output
from core.jobs.ledger import Ledger, Verdict
from core.jobs.offload import Offload
from core.jobs.outcome import Outcome, raced
from core.jobs.prepare import Preparer
from core.jobs.usage import job_usage
from core.logs import log_event
from core.models import ErrorClass, Job, JobError, Usage
from core.prompting import extract_citations


class Finalizer:
    def __init__(self, settings: Settings, ledger: Ledger, preparer: Preparer, on_terminal: Callable[[Job], Awaitable[None]], *,
                 store_io: Offload, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.ledger = ledger
        self.preparer = preparer
        self.on_terminal = on_terminal  # the callback, and a workflow child's fan-in (Workflows.follow_up)
        self.store_io = store_io
        self.clock = clock

    def verdict(self, job: Job, text: str, chunks: list[ContextChunk]) -> Verdict:
        """Citations, usage and cost, output checks: pure, so the reply and its result can be one write."""
        citations = extract_citations(text, chunks)
        usage = self._usage(job)
        try:
            check_output(text, citations, self.settings.guardrails)
        except GuardrailViolation as e:  # paid for and kept in the record; not served
            return Verdict(text, citations, usage, JobError(error_class=ErrorClass.permanent, message=str(e)), e.rule)
        return Verdict(text, citations, usage)

    async def finalize(self, job: Job, chunks: list[ContextChunk] | None = None,
                       written: Verdict | None = None) -> Outcome:
        """The result write for a job whose reply is saved, or (`written`) what follows the one write that
        saved the reply and its result together."""
        assert job.reply is not None
        verdict = written
        if verdict is None:
            if chunks is None:  # a redelivery after the reply was saved: the same chunks, by id
                chunks = self.preparer.refetch(job.tenant, job.request, job.context_chunks)
            verdict = self.verdict(job, job.reply.text, chunks)
            if not await self.store_io(self.ledger.finish, job, verdict):
                current = await self.store_io(self.ledger.load, job.id)
                if current is not None and current.status.terminal:
                    return Outcome("ack", status=current.status, detail="finished by another delivery")
                return raced("result write lost a race")
        if verdict.rule is not None:
            log_event("job.guardrail_failed", logging.WARNING, rule=verdict.rule)
        self._log(job)
        await self.on_terminal(job)
        return Outcome("ack", status=job.status)

    def _usage(self, job: Job) -> Usage:
        return job_usage(job, self.settings.models.get(job.route.model) if job.route else None)

    def _log(self, job: Job) -> None:
        log_event(
            "job." + job.status.value, model=job.route.model if job.route else None, input_tokens=job.usage.input_tokens,
            output_tokens=job.usage.output_tokens, cost_usd=job.usage.cost_usd, attempts=len(job.attempts),
            citations=len(job.citations), latency_ms=round(((job.finished_at or self.clock()) - job.created_at) * 1000, 1),
        )
