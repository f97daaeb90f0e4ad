"""`process`: one delivery through the job lifecycle, each stage a call you can read in order.

load and guard → prepare (retrieve, guardrails, route and fit, assemble) → cache lookup → per attempt:
admit (breaker, slot, budget hold, rate tokens) → attempt (claim, call, typed result) → apply it →
finalize → the aftermath of the write that ended the job (`core.jobs.aftermath`). It never raises for a job-level failure: the Outcome tells the runtime what to do with the
message. Guarantees, whatever the runtime: provider calls per job never exceed `governance.max_attempts`
(counted with a compare-and-set before each call); a delivery for a job leased by another worker waits;
a saved reply is never paid for again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from core.config.worker import Settings
from core.conversation import Ask
from core.errors import ConfigError, Contended, GuardrailViolation, NoRoute
from core.governance.ratelimit import Deferral
from core.guardrails import check_input
from core.jobs import attempt
from core.jobs.admission import MIN_CALL_S, Admission, OverBudget
from core.jobs.aftermath import Aftermath
from core.jobs.batch_lane import BatchLane
from core.jobs.cached import CachedReplies
from core.jobs.callback import Callbacks
from core.jobs.finalize import Finalizer
from core.jobs.image_inputs import with_image_data
from core.jobs.ledger import Ledger, Wrote
from core.jobs.offload import Offload
from core.jobs.outcome import Outcome, raced
from core.jobs.prepare import Preparer, Run
from core.jobs.thread_summary import Summaries
from core.jobs.threads import Threads, Wait
from core.jobs.usage import mark_lost
from core.logs import job_id_var, log_event, trace_id_var
from core.models import ErrorClass, Job, JobError, JobStatus, QueueMessage
from core.observability.metrics import Metrics, task_of
from core.ports import BlobStore, Delivery
from core.retry import jittered
from core.safety.layer import Safety
from core.safety.moderation import Pending
from core.workflows.engine import Workflows

THREAD_WAIT_S = 2.0  # how soon a job waiting for an earlier turn of its thread looks again


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        preparer: Preparer,
        replies: CachedReplies | None,
        admission: Admission,
        attempter: attempt.Attempter,
        finalizer: Finalizer,
        aftermath: Aftermath,
        workflows: Workflows,
        lane: BatchLane,
        callbacks: Callbacks,
        *,
        store_io: Offload,
        metrics: Metrics,
        threads: Threads,
        blobs: BlobStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.preparer = preparer
        self.replies = replies  # the response cache, when it is on
        self.admission = admission
        self.attempter = attempter
        self.finalizer = finalizer
        self.aftermath = aftermath  # what follows a terminal write this stage makes (a refusal, a dead letter)
        self.workflows = workflows
        self.lane = lane
        self.callbacks = callbacks  # a `kind: callback` message is delivered, not processed
        self.store_io = store_io
        self.metrics = metrics
        self.clock = clock
        self.threads = threads
        self.blobs = blobs  # where a job's images are
        self.summaries: Summaries | None = None  # set by the worker service: summary jobs are submitted through it
        self.safety: Safety | None = None  # set by the worker service: the tenant's policy screens retrieved chunks

    async def process(self, delivery: Delivery, *, deadline: float | None = None) -> Outcome:
        try:
            msg = QueueMessage.model_validate_json(delivery.body)
        except ValueError as e:
            log_event("queue.bad_message", logging.ERROR, message_id=delivery.message_id, error=str(e)[:500])
            # keep the body: let the platform redrive it to the DLQ for a human to read
            return Outcome("retry", delay_s=self.settings.governance.backoff_max_s, detail="unparseable message")
        trace_token, job_token = trace_id_var.set(msg.trace_id), job_id_var.set(msg.job_id)
        try:
            if msg.kind == "callback":
                return await self.callbacks.deliver(msg, deadline=deadline)
            return await self._process(msg, delivery, deadline or (self.clock() + self.settings.governance.lease_s))
        finally:
            trace_id_var.reset(trace_token)
            job_id_var.reset(job_token)

    async def _process(self, msg: QueueMessage, delivery: Delivery, deadline: float) -> Outcome:
        job = await self.store_io(self.ledger.load, msg.job_id)
        if job is not None and job.status.terminal and job.parent is not None:
            await self.store_io(self.aftermath.fan_in, job)  # a crash may have cut off its fan-in
        if (guarded := self._guard(job, delivery)) is not None:
            return guarded
        assert job is not None
        if job.request.workflow is not None:
            return await self.workflows.advance(job)
        if job.parent is not None and await self.store_io(self.workflows.orphaned, job):
            return Outcome("ack", status=JobStatus.cancelled, detail="its workflow ended before it started")
        if job.status is JobStatus.queued:
            self.metrics.picked(job.tenant, task_of(job), max(0.0, self.clock() - job.updated_at))
        if job.reply is not None:
            return await self.finalizer.finalize(job)
        if lost := mark_lost(job, self.settings.models, self.clock()):  # written by the next transition
            log_event("attempt.lost", logging.WARNING, attempts=lost, provider_calls=job.provider_calls)
        ask = job.request.ask()
        if job.thread is not None:  # after every earlier turn of its thread, with their turns
            earlier = await self.store_io(self.threads.history, job)
            if isinstance(earlier, Wait):
                return await self._defer(job, jittered(THREAD_WAIT_S), earlier.reason)
            if isinstance(earlier, str):
                return await self._refuse(job, earlier)
            ask = job.request.ask(earlier)
        run = await self._prepared(job, deadline, ask)
        if isinstance(run, Outcome):
            return run
        if self.replies is not None and job.thread is None and (hit := await self.replies.serve(run)) is not None:
            return hit
        decision = run.prepared.decision
        if self.lane.wanted(job, run.prepared.plan, decision):
            joined = await self.lane.join(job, decision, await run.assemblies.get(decision), run.prepared.plan)
            if joined is not None:
                return joined
        return await self._attempts(run)

    def _guard(self, job: Job | None, delivery: Delivery) -> Outcome | None:
        if job is None:
            log_event("job.missing", logging.WARNING, receive_count=delivery.receive_count)
            return Outcome("retry", delay_s=5.0, detail="job record not found yet")
        if job.status.terminal:
            return Outcome("ack", status=job.status, detail="already terminal (duplicate delivery)")
        if job.batch is not None and job.batch.state != "returned" and job.status is JobStatus.running:
            return Outcome("ack", status=job.status, detail="on the batch lane (duplicate delivery)")
        now = self.clock()
        if job.status is JobStatus.running and job.lease_expires_at and job.lease_expires_at > now:
            wait = max(1.0, job.lease_expires_at - now)
            log_event("job.deferred", reason="leased by another worker", delay_s=round(wait, 2))
            return Outcome("retry", delay_s=wait, status=job.status, detail="leased by another worker")
        return None

    async def _prepared(self, job: Job, deadline: float, ask: Ask) -> Run | Outcome:
        """The job prepared (a thread's left-out turns summarized, where configured), or the outcome refusing it."""
        try:
            run = await self._prepare(job, deadline, ask)
            if self.safety is not None and self.safety.moderates(job, "input"):
                judged = await self.safety.moderated(job, "input", "\n\n".join(job.request.ask().texts()))
                if isinstance(judged, Pending):
                    return await self._defer(job, jittered(THREAD_WAIT_S), judged.reason)
                if judged is not None:
                    return await self._refuse(job, judged)
            dropped = run.prepared.assembled.record.history_dropped
            if self.summaries is None or not Summaries.wanted(self.settings.threads, dropped):
                return run
            summarized = await self.summaries.replaced(job, ask, dropped)
            if isinstance(summarized, Wait):
                return await self._defer(job, jittered(THREAD_WAIT_S), summarized.reason)
            return run if summarized is None else await self._prepare(job, deadline, summarized)
        except (GuardrailViolation, NoRoute) as e:
            return await self._refuse(job, str(e))
        except ConfigError as e:  # e.g. the provider's secret is not set, a grant is missing: fix it, then replay
            return await self._refuse(job, f"the service is not configured for this job: {e}")

    async def _prepare(self, job: Job, deadline: float, ask: Ask) -> Run:
        if ask.images or any(t.images for t in ask.history):
            ask = await asyncio.to_thread(with_image_data, ask, self.blobs)
        candidates = await self.preparer.candidates(job.tenant, job.request)
        if self.safety is not None:  # redacted and fenced before anything counts or sends them
            candidates = self.safety.context(job, candidates)
        check_input("\n\n".join(job.request.ask().texts()), self.settings.guardrails)  # what this job brings
        prepared = self.preparer.prepare(job.tenant, job.request, candidates, job_id=job.id, ask=ask)
        for note in prepared.plan.notes:
            log_event("route.note", note=note)
        assemblies = self.preparer.assemblies(ask, candidates, prepared)
        await assemblies.get(prepared.decision)
        return Run(job, prepared, assemblies, deadline)

    async def _attempts(self, run: Run) -> Outcome:
        job, plan = run.job, run.prepared.plan
        current = run.prepared.decision
        tried = {current.model}
        while True:
            if job.provider_calls >= self.settings.governance.max_attempts:
                return await self._dead_letter(job, "attempt budget exhausted")
            if run.deadline - self.clock() < MIN_CALL_S:
                return await self._hand_back(job, 0.0, "no time left in this invocation")
            try:
                assembled = await run.assemblies.get(current)
                rate_tokens = assembled.rate_tokens(self.settings.models[current.model])
                async with self.admission.admit(
                    plan, current, rate_tokens, run.deadline, job, counted_input=assembled.record.input_tokens
                ) as ticket:
                    if isinstance(ticket, Deferral):
                        return await self._defer(job, jittered(ticket.delay_s), ticket.reason)
                    if isinstance(ticket, OverBudget):
                        return await self._fail(job, JobError(error_class=ErrorClass.permanent, message=ticket.message))
                    if ticket.decision.model != current.model:  # the breaker sent us to a circuit_open fallback
                        assembled = await run.assemblies.get(ticket.decision)
                    result = await self.attempter.run(job, ticket, plan, assembled, run.deadline, tried)
            except Contended as e:
                return await self._defer(job, jittered(1.0), str(e))
            except NoRoute as e:
                return await self._refuse(job, str(e))
            except ConfigError as e:  # the provider can't be built: permanent and explained, never "transient"
                return await self._refuse(job, f"the service cannot call its provider: {e}")
            outcome = await self._apply(run, result)
            if outcome is not None:
                return outcome
            if isinstance(result, attempt.Fallback):
                current = result.decision  # a typed fallback: the next attempt goes to another model
                tried.add(current.model)

    async def _apply(self, run: Run, d: attempt.AttemptResult) -> Outcome | None:
        """Carry out what an attempt's result calls for; None means "attempt again"."""
        job = run.job
        if isinstance(d, attempt.Replied):
            outcome = await self.finalizer.finalize(job, d.chunks, d.verdict)
            if outcome.status is JobStatus.succeeded and self.replies is not None and job.thread is None:
                await self.replies.keep(run, job)
            if job.route is not None and self.aftermath.audits:  # most deployments don't: no prompt looked up
                prompt = (await run.assemblies.get(job.route)).prompt
                await self.aftermath.audit(job, system=prompt.system, user=prompt.user)
            return outcome
        if isinstance(d, attempt.Lost):
            return raced(d.detail)
        if isinstance(d, attempt.Failed):
            return await self._fail(job, d.error)
        if isinstance(d, attempt.Exhausted):
            return await self._dead_letter(job, d.reason, d.error)
        if isinstance(d, attempt.RetryLater):
            return await self._hand_back(job, d.delay_s, f"{d.error.error_class.value} error, retrying later", d.error)
        if not await self.store_io(self.ledger.record, job, d.error):  # Fallback or RetryNow: keep the attempt
            return raced()
        if isinstance(d, attempt.Fallback):
            log_event("route.fallback", model=d.decision.model, reason=d.decision.reason)
        else:
            await asyncio.sleep(d.delay_s)
        return None

    # ------------------------------------------------------------------ transitions as outcomes

    async def _refuse(self, job: Job, message: str) -> Outcome:
        """Refused before any call (guardrail, policy, no model fits): explained, never retried."""
        log_event("job.refused", logging.WARNING, reason=message)
        return await self._fail(job, JobError(error_class=ErrorClass.permanent, message=message))

    async def _fail(self, job: Job, error: JobError) -> Outcome:
        if not await self.store_io(self._ending, self.ledger.fail, job, error):
            return raced()
        log_event("job.failed", logging.WARNING, error_class=error.error_class.value)
        return Outcome("ack", status=JobStatus.failed, detail=error.message)

    async def _dead_letter(self, job: Job, reason: str, error: JobError | None = None) -> Outcome:
        if not await self.store_io(self._ending, self.ledger.dead_letter, job, reason, error):
            return raced()
        log_event("job.dead_lettered", logging.ERROR, reason=reason, provider_calls=job.provider_calls)
        return Outcome("ack", status=JobStatus.dead_lettered, detail=reason)

    def _ending(self, transition: Callable[..., Wrote], job: Job, *args: Any) -> bool:
        """A terminal transition and, when it ended the job, its aftermath: one call on the storage side."""
        return self.aftermath.ended(transition(job, *args), job)

    async def _hand_back(self, job: Job, delay_s: float, detail: str, error: JobError | None = None) -> Outcome:
        if not await self.store_io(self.ledger.hand_back, job, error):
            return raced(delay_s=max(1.0, delay_s))
        log_event("job.retry_scheduled", delay_s=round(delay_s, 3), detail=detail, provider_calls=job.provider_calls)
        return Outcome("retry", delay_s=delay_s, status=JobStatus.queued, detail=detail)

    async def _defer(self, job: Job, delay_s: float, reason: str) -> Outcome:
        """Come back later without spending an attempt; the job records what it waits for, and until when."""
        if not await self.store_io(self.ledger.defer, job, until=self.clock() + delay_s, reason=reason):
            return raced(delay_s=max(1.0, delay_s))
        log_event("job.deferred", reason=reason, delay_s=round(delay_s, 3))
        self.metrics.deferred(job.tenant, task_of(job), job.route.model if job.route else "-")
        return Outcome("defer", delay_s=delay_s, status=JobStatus.queued, detail=reason)
