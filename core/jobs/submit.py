"""Submitting a job: validate, store once per idempotency key, enqueue, or say exactly what to do.

The outbox rule: the job is stored before its message is sent; if the send fails the caller gets
`QueueUnavailable` with the job id, a retry with the same Idempotency-Key re-sends it, and the
reconciler sends it otherwise. So a stored job is never silently stranded and never runs twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from core.config.api import ApiSettings
from core.errors import BudgetExhausted, IdempotencyConflict, InputError, QueueUnavailable
from core.ids import new_job_id, new_trace_id
from core.jobs.checks import check_request, check_workflow
from core.jobs.image_inputs import stash_images
from core.jobs.ledger import Ledger
from core.logs import log_event
from core.models import Job, JobRequest, JobStatus, QueueMessage
from core.ports import BlobStore, Retriever, SendQueue, StateStore
from core.workflows.inputs import stash

if TYPE_CHECKING:
    from core.config.worker import Settings
    from core.jobs.threads import Threads
    from core.safety.layer import Safety

IDEMPOTENCY_TTL_S = 24 * 3600


def send_job(queue: SendQueue, job: Job, delay_s: float = 0.0, *, kind: Literal["job", "callback"] = "job") -> None:
    """Put the job's pointer on the queue (never the prompt itself): to run it, or to send its callback."""
    queue.send(QueueMessage.for_job(job, kind).model_dump_json(), delay_s=delay_s)


def send_or_raise(queue: SendQueue, job: Job, explain: Callable[[str], str]) -> None:
    """Send the message of a job already stored; if the queue refuses it, log that and raise QueueUnavailable
    with `explain(the error's type)`: the job is kept, and the reconciler sends its message later."""
    try:
        send_job(queue, job)
    except Exception as e:
        log_event("queue.send_failed", logging.ERROR, job_id=job.id, trace_id=job.trace_id, error=repr(e)[:500])
        raise QueueUnavailable(explain(type(e).__name__), job_id=job.id) from e


def queue_callback(queue: SendQueue, job: Job, delay_s: float = 0.0) -> None:
    """Queue the delivery of a job's armed callback (it just became terminal). A send that fails is logged:
    the result is stored either way, and the job view shows the callback still pending."""
    if job.callback is None or job.callback.state != "pending":
        return
    try:
        send_job(queue, job, delay_s, kind="callback")
    except Exception as e:
        log_event("callback.enqueue_failed", logging.ERROR, job_id=job.id, error=repr(e)[:300])


class Submitter:
    def __init__(
        self,
        settings: ApiSettings,
        ledger: Ledger,
        state: StateStore,
        queue: SendQueue,
        *,
        blobs: BlobStore | None = None,
        retriever: Retriever | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._settings_priced: Settings | None = None
        self.blobs = blobs
        self.ledger = ledger
        self.state = state
        self.queue = queue
        self.retriever = retriever
        self.clock = clock
        self.ordered_ids = bool(getattr(ledger.store, "ordered_ids", False))  # declared by the store (JobStore)
        self.threads: Threads | None = None  # set by the service: a thread job takes its turn number here
        self.safety: Safety | None = None  # set by the service: the tenant's safety policy screens what is stored

    def submit(
        self,
        tenant: str,
        request: JobRequest,
        *,
        idempotency_key: str | None = None,
        trace_id: str | None = None,
        parent_span_id: str | None = None,
    ) -> tuple[Job, bool]:
        """Store and enqueue a job. Returns (job, created); a repeated idempotency key returns the first job."""
        check_request(request, tenant, self.settings, self.retriever)
        self._check_budget(tenant, request)
        safety, fingerprint = self.safety, request.fingerprint()
        screened = safety.submitted(tenant, request) if safety is not None else None
        if safety is not None and screened is not None:  # from here on only the redacted request exists
            fingerprint, request = safety.fingerprint(screened, fingerprint), screened.request
        job_id = new_job_id(ordered=self.ordered_ids)
        if idempotency_key is not None:
            found = self._reserve_key(tenant, idempotency_key, fingerprint, job_id)
            if isinstance(found, Job):
                return found, False
            job_id = found
        if request.workflow is not None:  # the version pinned at submit, large inputs to the blob store
            request = request.model_copy(
                update={"workflow": check_workflow(request, self.settings), "inputs": stash(request.inputs, self.blobs)}
            )
        request = stash_images(request, self.blobs, tenant)  # no stored job holds an image's bytes
        job = self._new_job(job_id, tenant, request, fingerprint, idempotency_key, trace_id)
        job.parent_span_id = parent_span_id
        if safety is not None and screened is not None:
            job.safety = safety.sealed(screened, tenant, job_id)
        if request.thread_id is not None and self.threads is not None:
            sealing = safety.thread_sealing(tenant, request.thread_id, screened) if safety and screened else None
            job.thread = self.threads.open(tenant, request, job_id, sealing=sealing)
        if not self.ledger.create(job):
            existing = self.ledger.load(job_id)
            assert existing is not None
            return existing, False
        self.enqueue_or_raise(job)
        log_event(
            "job.submitted",
            job_id=job.id,
            trace_id=job.trace_id,
            tenant=tenant,
            task=request.task,
            input_hash=fingerprint[:16],
            prompt_chars=sum(len(t) for t in request.ask().texts()),
            turns=len(request.messages or ()),
            workflow=request.workflow,
        )
        return job, True

    def _check_budget(self, tenant: str, request: JobRequest) -> None:
        """A tenant at a spend limit, or whose remainder can't pay for the cheapest call this request may make,
        gets 429 with the reset time, and nothing is stored (the job would only fail budget_exhausted)."""
        cfg = self.settings.tenants.get(tenant)
        if cfg is None or cfg.budgets is None:
            return
        from core.governance.budget import Budgets, cheapest_call, scopes, usd

        within = scopes(tenant, request.task, cfg.budgets, self.clock())
        budgets = Budgets(self.state, clock=self.clock)
        refused, detail = budgets.exhausted(within), ""
        if (
            refused is None
            and request.workflow is None
            and (cheapest := cheapest_call(self._priced(), tenant, request))
        ):
            refused = budgets.cannot_pay(within, cheapest)
            detail = f"; the cheapest call this request may make is held at up to {usd(cheapest)}"
        if refused is not None:
            raise BudgetExhausted(
                refused.message() + detail, retry_after_s=max(1.0, refused.scope.resets_at - self.clock())
            )

    def _priced(self) -> Settings:
        """The full settings (the model catalog, routing) for pricing a call: built once, and only here (an API
        function's cold start never defines them; a budgeted tenant's first submit does)."""
        from core.config.worker import Settings

        if isinstance(self.settings, Settings):
            return self.settings
        if self._settings_priced is None:
            self._settings_priced = Settings.model_validate(self.settings.model_dump())
        return self._settings_priced

    def _reserve_key(self, tenant: str, idempotency_key: str, fingerprint: str, job_id: str) -> Job | str:
        """The job an Idempotency-Key already names, or the id the new job must take."""
        if not (1 <= len(idempotency_key) <= 255):
            raise InputError("Idempotency-Key must be 1 to 255 characters", field="Idempotency-Key")
        key = f"idem:{tenant}:{idempotency_key}"
        if self.state.put_if_absent(key, {"job_id": job_id, "hash": fingerprint}, ttl_s=IDEMPOTENCY_TTL_S):
            return job_id
        rec = self.state.get(key)
        if rec is None:  # expired between the two calls: the key is free again
            return job_id
        if rec.value["hash"] != fingerprint:
            raise IdempotencyConflict(
                "this Idempotency-Key was already used with a different request body; use a new key for a new request"
            )
        existing = self.ledger.load(rec.value["job_id"])
        if existing is None:
            return str(rec.value["job_id"])  # the first submit crashed before storing: finish it
        if existing.status is JobStatus.queued and existing.provider_calls == 0:
            # the first submit may have stored the job but failed to queue it; a second message is
            # harmless (processing is idempotent), a missing one is not
            self.enqueue_or_raise(existing)
        return existing

    def _new_job(
        self,
        job_id: str,
        tenant: str,
        request: JobRequest,
        fingerprint: str,
        idempotency_key: str | None,
        trace_id: str | None,
    ) -> Job:
        if (
            not request.collection
            and request.workflow is None
            and (t := self.settings.tenants.get(tenant))
            and t.default_collection
        ):
            request = request.model_copy(update={"collection": t.default_collection})
        now = self.clock()
        return Job(
            id=job_id,
            tenant=tenant,
            request=request,
            request_hash=fingerprint,
            idempotency_key=idempotency_key,
            trace_id=trace_id or new_trace_id(),
            created_at=now,
            updated_at=now,
        )

    def enqueue_or_raise(self, job: Job) -> None:
        after = int(self.settings.governance.reconcile_after_s)
        send_or_raise(
            self.queue,
            job,
            lambda error: (
                f"job {job.id} was stored but the queue rejected it ({error}); retry with the same "
                f"Idempotency-Key to queue it now, or the reconciler will queue it within {after} s. "
                "Without an Idempotency-Key, do not resubmit: the job would run twice"
            ),
        )
