"""The job ledger: every change of a stored job as a named transition.

Each transition checks its edge against `core.models.TRANSITIONS`, applies its change and writes with
one compare-and-set on the job's version; a lost race returns False and the caller decides (usually a
short retry of the delivery). The verbs that must land even when others write meanwhile (replay, the
platform's dead-letter, the callback record, saving a paid reply) go through one re-read-and-reapply
helper. Calls are synchronous, like the store port; the worker runs them through `core.jobs.offload`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from enum import IntEnum
from typing import TYPE_CHECKING

from core.errors import ConflictError, IllegalTransition, InputError, NotFound
from core.jobs.changes import Change, bill_on_cancelled, cancelled_in_flight, failed, set_error, succeeded, with_reason
from core.jobs.usage import job_usage, mark_lost
from core.models import (
    TRANSITIONS,
    Attempt,
    CallbackState,
    Citation,
    ErrorClass,
    Job,
    JobError,
    JobStatus,
    PromptAssembly,
    ProviderResult,
    RouteDecision,
    Usage,
    Waiting,
)
from core.ports import JobStore

if TYPE_CHECKING:
    from core.config.worker import ModelConfig
    from core.jobs.verdict import Verdict  # type only: the API's cold start never judges a reply
    from core.views import JobView

TRIES = 5
REPLAYABLE = (JobStatus.dead_lettered, JobStatus.failed, JobStatus.cancelled)


class Wrote(IntEnum):
    """What one compare-and-set did: `lost` to another write (falsy), `written`, or `ended`: written, and the
    write that made the job terminal, so its aftermath (`core.jobs.aftermath`) follows, once."""

    lost = 0
    written = 1
    ended = 2


class Ledger:
    def __init__(self, store: JobStore, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.views: Callable[[Job], JobView] = _plain_view  # the service's restores what a policy redacted

    # ------------------------------------------------------------------ reads and creation

    def load(self, job_id: str) -> Job | None:
        return self.store.get(job_id)

    def create(self, job: Job) -> bool:
        """Store a new job; False if one with its id exists already."""
        try:
            self.store.create(job)
        except ConflictError:
            return False
        return True

    # ------------------------------------------------------------------ the worker's transitions

    def claim(
        self,
        job: Job,
        decision: RouteDecision,
        *,
        lease_until: float,
        template: str,
        chunk_ids: list[str],
        assembly: PromptAssembly,
    ) -> Attempt | None:
        """Spend one attempt of the persisted budget and take the lease, *before* paying for the call."""
        now = self.clock()
        attempt = Attempt(
            number=job.provider_calls + 1,
            started_at=now,
            trace_id=job.trace_id,
            provider=decision.provider,
            model=decision.model,
        )

        def change(j: Job) -> None:
            j.provider_calls += 1
            j.lease_expires_at = lease_until
            j.waiting = None
            j.route = decision
            j.context_chunks = chunk_ids
            j.prompt_template = template
            j.assembly = assembly
            j.attempts.append(attempt)

        return attempt if self.write(job, JobStatus.running, change) else None

    def renew(self, job: Job, lease_until: float) -> Wrote:
        """Extend the lease of a job whose call is in flight (the heartbeat)."""

        def change(j: Job) -> None:
            j.lease_expires_at = lease_until

        return self.write(job, JobStatus.running, change)

    def record(self, job: Job, error: JobError) -> Wrote:
        """Keep a failed attempt's record while the job goes on (a fallback, an in-process retry)."""
        return self.write(job, job.status, set_error(error))

    def save_reply(self, job: Job, reply: ProviderResult, verdict: Verdict | None = None) -> Wrote:
        """Persist a paid reply before anything else, re-applying it if another delivery wrote meanwhile
        (unless that one finished the job or saved a reply of its own). With its `verdict` the same write
        also finishes the job (nothing else has to happen between the two); if that write loses a race,
        only the reply is re-applied and the result is written after it, as without a verdict."""

        safety = job.safety  # with the answer's findings: re-applied with the reply if another write came between

        def change(j: Job) -> None:
            j.reply, j.error = reply, None
            if safety is not None:
                j.safety = safety

        if verdict is not None:
            to, finish = self._finishing(verdict)

            def change_and_finish(j: Job) -> None:
                change(j)
                finish(j)

            if wrote := self.write(job, to, change_and_finish):
                return wrote
        elif wrote := self.write(job, job.status, change):
            return wrote
        attempts = job.attempts
        kept: list[bool] = []

        def reapply(current: Job | None) -> Wrote | None:
            if current is not None and cancelled_in_flight(current, attempts):
                kept.append(True)  # paid for: billed on the cancelled job, never served
                current.attempts = attempts
                return self.write(current, current.status, bill_on_cancelled(reply))
            if current is None or current.status.terminal or current.reply is not None:
                return None
            current.attempts = attempts
            return self.write(current, current.status, change)

        return Wrote.written if self.retrying(job.id, reapply) is not None and not kept else Wrote.lost

    def finish(self, job: Job, verdict: Verdict) -> Wrote:
        """The result of a saved reply: succeeded, or failed by an output check (keeping citations, usage)."""
        to, change = self._finishing(verdict)
        return self.write(job, to, change)

    def _finishing(self, v: Verdict) -> tuple[JobStatus, Change]:
        if v.error is None:
            return JobStatus.succeeded, succeeded(v.text, v.citations, v.usage, self.clock(), v.safety)
        return JobStatus.failed, failed(v.error, v.citations, v.usage, self.clock(), v.safety)

    def serve_cached(
        self,
        job: Job,
        decision: RouteDecision,
        reply: ProviderResult,
        source_job: str,
        *,
        template: str,
        chunk_ids: list[str],
        assembly: PromptAssembly,
    ) -> Wrote:
        """A response-cache hit: the reply another job paid for, with no call and no attempt."""

        def change(j: Job) -> None:
            j.route = decision.model_copy(update={"reason": decision.reason + " (response cache hit)"})
            j.prompt_template, j.context_chunks, j.assembly = template, chunk_ids, assembly
            j.reply, j.cached_from = reply, source_job

        return self.write(job, job.status, change)

    def defer(self, job: Job, *, until: float, reason: str) -> Wrote:
        """Back to the queue to wait (a rate limit, an open circuit, a budget), no attempt spent: the view says
        what for and until when, and the reconciler leaves the job alone while its deferred message is due."""

        def change(j: Job) -> None:
            j.waiting = Waiting(reason=reason, until=until)

        return self.write(job, JobStatus.queued, change)

    def hand_back(self, job: Job, error: JobError | None = None) -> Wrote:
        """Give the job back to the queue (a retry later, a deferral); the lease ends."""

        def change(j: Job) -> None:
            if error is not None:
                j.error = error

        return self.write(job, JobStatus.queued, change)

    def succeed(self, job: Job, *, text: str, citations: list[Citation], usage: Usage) -> Wrote:
        return self.write(job, JobStatus.succeeded, succeeded(text, citations, usage, self.clock()))

    def fail(
        self, job: Job, error: JobError, *, citations: list[Citation] | None = None, usage: Usage | None = None
    ) -> Wrote:
        """Permanently failed; a reply that was paid for but refused keeps its usage, not its text."""
        return self.write(job, JobStatus.failed, failed(error, citations, usage, self.clock()))

    def dead_letter(self, job: Job, reason: str, error: JobError | None = None) -> Wrote:
        """Out of budget or given up by the queue; the last provider error stays, prefixed by why."""

        def change(j: Job) -> None:
            j.error = with_reason(error or j.error, reason)
            j.usage = job_usage(j)
            j.finished_at = self.clock()

        return self.write(job, JobStatus.dead_lettered, change)

    # ------------------------------------------------------------------ the operator's transitions

    def bill_lost_call(self, job: Job, models: dict[str, ModelConfig]) -> Wrote:
        """A call in flight when its job was cancelled, whose reply never landed (its worker died): the attempt
        becomes `lost` at its estimated cost, billed on the job, and the job may be replayed."""

        def change(j: Job) -> None:
            mark_lost(j, models, self.clock())
            j.usage, j.call_in_flight_until = job_usage(j), None

        return self.write(job, job.status, change)

    def touch(self, job: Job) -> Wrote:
        """Mark a stranded job as seen, so the next reconcile sweep leaves it alone for a while."""
        return self.write(job, job.status, lambda j: None)

    def dead_letter_by_queue(self, job_id: str, reason: str) -> Job | None:
        """The platform dead-lettered the job's message: mark it, unless it is missing, terminal or still
        leased. Returns the job if this marked it, None if it was left alone."""

        def step(job: Job | None) -> Wrote | None:
            if job is None or job.status.terminal or self._leased(job):
                return None
            return self.dead_letter(job, reason)

        try:
            return self.retrying(job_id, step)
        except ConflictError:
            return None

    def replay(self, job_id: str) -> Job:
        """A failed, dead-lettered or cancelled job back to `queued` with a fresh attempt budget; never while a
        call it was cancelled during is still in flight (that would pay twice for the same question). A
        callback of the ending still pending keeps the view of that ending, to be delivered as it was."""

        def step(job: Job | None) -> Wrote:
            if job is None:
                raise NotFound(f"job {job_id} not found")
            check_replayable(job)
            if job.call_in_flight_until is not None and job.call_in_flight_until > self.clock():
                wait = job.call_in_flight_until - self.clock()
                raise InputError(
                    f"job {job_id} was cancelled while a provider call was in flight; that call ends "
                    f"within {wait:.0f} s (its reply is billed on the job): replay it after",
                    status=409,
                )

            def change(j: Job) -> None:
                if j.callback is not None and j.callback.state == "pending" and j.callback.id not in j.callback_views:
                    j.callback_views = {**j.callback_views, j.callback.id: self.views(j).model_dump_json()}
                j.provider_calls, j.reply, j.finished_at, j.call_in_flight_until = 0, None, None, None

            return self.write(job, JobStatus.queued, change)

        job = self.retrying(job_id, step)
        assert job is not None
        return job

    def cancel(self, job_id: str) -> Job:
        """A user's DELETE: a job not terminal yet ends `cancelled`. A call in flight is not stopped: its
        reply, when it comes, is billed on the cancelled job (never served), and until then the job can't be
        replayed (`call_in_flight_until`)."""

        def step(job: Job | None) -> Wrote:
            if job is None:
                raise NotFound(f"job {job_id} not found")
            if job.status.terminal:
                raise InputError(
                    f"job {job_id} is already {job.status.value}; only queued or running jobs can be cancelled",
                    status=409,
                )

            def change(j: Job) -> None:
                j.error = JobError(error_class=ErrorClass.permanent, message="cancelled by request")
                j.usage = j.usage if j.workflow is not None else job_usage(j)
                j.finished_at = self.clock()
                if self._leased(j):  # a call may be in flight: its reply is billed here when it lands
                    j.call_in_flight_until = j.lease_expires_at

            return self.write(job, JobStatus.cancelled, change)

        job = self.retrying(job_id, step)
        assert job is not None
        return job

    # ------------------------------------------------------------------ the one compare-and-set

    def write(self, job: Job, to: JobStatus, change: Change) -> Wrote:
        """The one compare-and-set under every named transition (here, and the workflow's in
        `core.workflows.steps`): check the edge, apply `change`, write if the version still holds, and say
        whether this write ended the job."""
        if to is not job.status and to not in TRANSITIONS[job.status]:
            raise IllegalTransition(f"job {job.id}: {job.status.value} -> {to.value} is not an allowed transition")
        expected = job.version
        change(job)
        if job.status is JobStatus.running and to is not JobStatus.running:
            job.lease_expires_at = None  # leaving `running` ends the lease
        if to.terminal:
            job.waiting = None
        if to.terminal and to is not job.status and job.request.callback_url:
            if job.callback is not None and job.callback.state == "pending":  # one callback per terminal state
                job.earlier_callbacks = [*job.earlier_callbacks, job.callback]
            job.callback = CallbackState(id=f"msg_{uuid.uuid4().hex}", url=job.request.callback_url, event=to.value)
        entering = to.terminal and not job.status.terminal
        job.status = to
        job.updated_at = self.clock()
        if not self.store.update(job, expected_version=expected):
            return Wrote.lost
        return Wrote.ended if entering else Wrote.written

    def retrying(
        self, job_id: str, step: Callable[[Job | None], Wrote | bool | None], *, tries: int = TRIES
    ) -> Job | None:
        """Re-read the job and re-apply `step` while its write loses races. `step` returns True once
        written, None to stop without writing (this returns None then), False after a lost write."""
        for _ in range(tries):
            job = self.store.get(job_id)
            done = step(job)
            if done is None:
                return None
            if done:
                return job
        raise ConflictError(f"job {job_id} kept changing under {tries} tries; try again")

    def _leased(self, job: Job) -> bool:
        lease = job.lease_expires_at
        return job.status is JobStatus.running and bool(lease) and lease is not None and lease > self.clock()


def check_replayable(job: Job) -> None:
    """InputError (409) unless the job ended in a state a replay starts from again."""
    if job.status not in REPLAYABLE:
        raise InputError(
            f"job {job.id} is {job.status.value}; only dead_lettered, failed or cancelled jobs can be replayed",
            status=409,
        )


def _plain_view(job: Job) -> JobView:
    from core.views import JobView

    return JobView.of(job)
