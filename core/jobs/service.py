"""`ApiService`: the use cases an HTTP API function serves (submit, get, view, list), and nothing that
processes jobs, so its cold start loads no routing, retrieval, governance or provider code."""

from __future__ import annotations

import logging
import time
from typing import Callable

from core.config.api import ApiSettings
from core.errors import InputError
from core.governance.ledger import UsageLedger
from core.governance.outcomes import OutcomeLedger
from core.jobs.filters import EVERY, JobFilter
from core.jobs.ledger import Ledger
from core.jobs.offload import offload
from core.jobs.queries import JobPage, Queries
from core.jobs.submit import Submitter, queue_callback
from core.logs import log_event
from core.models import Job, JobRequest, JobStatus
from core.observability.metrics import Fanout, Metrics, job_record
from core.ports import BlobStore, Grouped, JobStore, Retriever, SendQueue, StateStore
from core.streaming.events import Feed
from core.streaming.log import StreamLog
from core.views import JobView


class ApiService:
    def __init__(self, settings: ApiSettings, *, store: JobStore, state: StateStore, queue: SendQueue,
                 blobs: BlobStore | None = None, retriever: Retriever | None = None,
                 metrics: Metrics | None = None, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.metrics = metrics or Fanout([])
        self.ledger = Ledger(store, clock=clock, on_terminal=self._report_terminal)
        self.submitter = Submitter(settings, self.ledger, state, queue, blobs=blobs, retriever=retriever, clock=clock)
        self.streams = StreamLog(state, blobs, settings.stream)
        self.queries = Queries(store, self.streams)
        self.feed = Feed(self.queries, self.streams, settings.stream)
        self.spend = UsageLedger(state, clock=clock)
        self.outcomes = OutcomeLedger(state, clock=clock)
        # stores that commit in groups (the embedded ones): the job, its idempotency key and its message
        # are written in one transaction, visible together
        self.unit = store.storage.at_once if isinstance(store, Grouped) and isinstance(queue, Grouped) else None
        self.io = offload(store)  # how `asubmit` reaches the store from an event loop

    def submit(self, tenant: str, request: JobRequest, *, idempotency_key: str | None = None,
               trace_id: str | None = None, parent_span_id: str | None = None) -> tuple[Job, bool]:
        """Store and enqueue a job: (job, created); a repeated Idempotency-Key returns the first job."""
        if self.unit is not None:
            return self.unit(self.submitter.submit, tenant, request, idempotency_key=idempotency_key,
                             trace_id=trace_id, parent_span_id=parent_span_id)
        return self.submitter.submit(tenant, request, idempotency_key=idempotency_key, trace_id=trace_id,
                                     parent_span_id=parent_span_id)

    async def asubmit(self, tenant: str, request: JobRequest, *, idempotency_key: str | None = None,
                      trace_id: str | None = None, parent_span_id: str | None = None) -> tuple[Job, bool]:
        """`submit` for code on an event loop (an embedding async app). With the embedded stores it joins the
        loop turn's group: its job, key and message commit with the workers' writes of that turn, one commit
        instead of one per submit, and a lock held by another process is waited for on the storage thread,
        not on the loop. Remote stores are called in a thread."""
        return await self.io(self.submitter.submit, tenant, request, idempotency_key=idempotency_key,
                             trace_id=trace_id, parent_span_id=parent_span_id)

    def get(self, tenant: str | None, job_id: str) -> Job:
        return self.queries.get(tenant, job_id)

    def view(self, tenant: str | None, job_id: str) -> JobView:
        return self.queries.view(tenant, job_id)

    def page(self, tenant: str | None, *, status: JobStatus | None = None, limit: int = 50,
             cursor: str | None = None, where: JobFilter = EVERY) -> JobPage:
        """`GET /v1/jobs`: newest first, a page at a time (`tenant=None`: every tenant's, for an operator)."""
        return self.queries.page(tenant, status=status, limit=limit, cursor=cursor, where=where)

    def children_page(self, tenant: str | None, parent_id: str, *, status: JobStatus | None = None, limit: int = 50,
                      cursor: str | None = None, where: JobFilter = EVERY) -> JobPage:
        """`GET /v1/jobs?parent=ID`: a workflow's child jobs, step by step and in order, a page at a time."""
        return self.queries.children_page(tenant, parent_id, status=status, limit=limit, cursor=cursor, where=where)

    def list(self, tenant: str | None, *, status: JobStatus | None = None, limit: int = 50) -> list[Job]:
        return self.page(tenant, status=status, limit=limit).jobs

    def children(self, tenant: str, parent_id: str, *, status: JobStatus | None = None, limit: int = 50) -> list[Job]:
        return self.children_page(tenant, parent_id, status=status, limit=limit).jobs

    def _report_terminal(self, job: Job) -> None:
        """A job's ending: counted on the outcome ledger (in the same storage group as the write that ended it,
        where stores group writes), and its metrics once that write is durable."""
        from core.embedded.storage_thread import after_commit

        try:
            self.outcomes.add(job)
        except Exception as e:  # a dashboard's count is never worth a job's ending: said, and the job goes on
            log_event("outcomes.unrecorded", logging.WARNING, job_id=job.id, error=repr(e)[:300])
        after_commit(lambda: self.metrics.job(job_record(job), job))

    def replay_for(self, tenant: str | None, job_id: str) -> Job:
        """`POST /v1/jobs/{id}/replay`: a failed, dead-lettered or cancelled job of this tenant, queued again."""
        self.queries.get(tenant, job_id)  # NotFound for another tenant's
        return self.replay(job_id)

    def replay(self, job_id: str, *, enqueue: bool = True) -> Job:
        """The API side's replay (a worker service resumes workflows step by step: core.jobs.operator)."""
        current = self.ledger.load(job_id)
        if current is not None and current.request.workflow is not None:
            raise InputError(f"job {job_id} is a workflow: replay it where workers run (alto dlq replay), which "
                             "resumes it at the step it stopped in", status=409)
        job = self.ledger.replay(job_id)
        if enqueue:
            self.submitter.enqueue_or_raise(job)
        return job

    def cancel(self, tenant: str | None, job_id: str) -> Job:
        """`DELETE /v1/jobs/{id}`: the job ends `cancelled`, and its callback (if it has one) is queued; a
        workflow's children not started never start."""
        self.queries.get(tenant, job_id)  # NotFound for another tenant's
        job = self.ledger.cancel(job_id)
        queue_callback(self.submitter.queue, job)
        return job
