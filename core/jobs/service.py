"""`ApiService`: the use cases an HTTP API function serves (submit, get, view, list), and nothing that
processes jobs, so its cold start loads no routing, retrieval, governance or provider code."""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable

from core.access import access_of, joint
from core.config.api import ApiSettings
from core.conversation import message_of
from core.errors import InputError, NotFound
from core.governance.outcomes import OutcomeLedger
from core.governance.spend import UsageLedger
from core.images import thread_prefix
from core.jobs.aftermath import Aftermath
from core.jobs.filters import EVERY, JobFilter
from core.jobs.ledger import Ledger
from core.jobs.offload import offload
from core.jobs.queries import JobPage, Queries
from core.jobs.replay import Replays
from core.jobs.submit import Submitter
from core.jobs.threads import Threads
from core.models import Job, JobRequest, JobStatus
from core.observability.metrics import Fanout, Metrics
from core.ports import BlobStore, JobStore, Retriever, SendQueue, StateStore
from core.safety.layer import Safety
from core.safety.placeholders import revealer
from core.streaming.events import Feed
from core.streaming.log import StreamLog
from core.views import JobView, ThreadErased, ThreadView


class ApiService:
    def __init__(
        self,
        settings: ApiSettings,
        *,
        store: JobStore,
        state: StateStore,
        queue: SendQueue,
        blobs: BlobStore | None = None,
        retriever: Retriever | None = None,
        metrics: Metrics | None = None,
        safety: Safety | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Fanout([])
        self.safety = safety or Safety.of(settings, metrics=self.metrics, local=settings.resolved_data_dir())
        self.ledger = Ledger(store, clock=clock)
        self.submitter = Submitter(settings, self.ledger, state, queue, blobs=blobs, retriever=retriever, clock=clock)
        self.submitter.safety = self.safety
        self.streams = StreamLog(state, blobs, settings.stream)
        self.blobs = blobs
        self.queries = Queries(store, self.streams, self.safety.reveal)
        self.ledger.views = self.queries.view_of  # a callback's body is the view its receiver reads
        self.feed = Feed(self.queries, self.streams, settings.stream)
        self.spend = UsageLedger(state, clock=clock)
        self.outcomes = OutcomeLedger(state, clock=clock)
        # an API-only app has no workflow engine: a worker service's aftermath adds the fan-in
        self.threads = Threads(state, store, clock)
        self.submitter.threads = self.threads
        self.safety.thread_sealed = self.threads.sealed  # a thread job restores every turn's values
        self.aftermath = Aftermath(self.outcomes, self.metrics, queue, access_of(store), threads=self.threads)
        self.replays = Replays(settings, self.ledger, queue)  # a worker service adds the workflow engine
        # where the store and the queue share one access (the embedded ones, one storage group), the job, its
        # idempotency key and its message are written in one transaction, visible together
        self.unit = joint(store, queue)
        self.io = offload(store)  # how `asubmit` reaches the store from an event loop

    def submit(
        self,
        tenant: str,
        request: JobRequest,
        *,
        idempotency_key: str | None = None,
        trace_id: str | None = None,
        parent_span_id: str | None = None,
    ) -> tuple[Job, bool]:
        """Store and enqueue a job: (job, created); a repeated Idempotency-Key returns the first job."""
        return self.unit.at_once(
            self.submitter.submit,
            tenant,
            request,
            idempotency_key=idempotency_key,
            trace_id=trace_id,
            parent_span_id=parent_span_id,
        )

    async def asubmit(
        self,
        tenant: str,
        request: JobRequest,
        *,
        idempotency_key: str | None = None,
        trace_id: str | None = None,
        parent_span_id: str | None = None,
    ) -> tuple[Job, bool]:
        """`submit` for code on an event loop (an embedding async app). With the embedded stores it joins the
        loop turn's group: its job, key and message commit with the workers' writes of that turn, one commit
        instead of one per submit, and a lock held by another process is waited for on the storage thread,
        not on the loop. Remote stores are called in a thread."""
        return await self.io(
            self.submitter.submit,
            tenant,
            request,
            idempotency_key=idempotency_key,
            trace_id=trace_id,
            parent_span_id=parent_span_id,
        )

    def get(self, tenant: str | None, job_id: str) -> Job:
        return self.queries.get(tenant, job_id)

    def view(self, tenant: str | None, job_id: str) -> JobView:
        return self.queries.view(tenant, job_id)

    def page(
        self,
        tenant: str | None,
        *,
        status: JobStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
        where: JobFilter = EVERY,
    ) -> JobPage:
        """`GET /v1/jobs`: newest first, a page at a time (`tenant=None`: every tenant's, for an operator)."""
        return self.queries.page(tenant, status=status, limit=limit, cursor=cursor, where=where)

    def children_page(
        self,
        tenant: str | None,
        parent_id: str,
        *,
        status: JobStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
        where: JobFilter = EVERY,
    ) -> JobPage:
        """`GET /v1/jobs?parent=ID`: a workflow's child jobs, step by step and in order, a page at a time."""
        return self.queries.children_page(tenant, parent_id, status=status, limit=limit, cursor=cursor, where=where)

    def list(self, tenant: str | None, *, status: JobStatus | None = None, limit: int = 50) -> list[Job]:
        return self.page(tenant, status=status, limit=limit).jobs

    def children(
        self, tenant: str, parent_id: str, *, status: JobStatus | None = None, limit: int = 50
    ) -> builtins.list[Job]:
        return self.children_page(tenant, parent_id, status=status, limit=limit).jobs

    def replay_for(self, tenant: str | None, job_id: str) -> Job:
        """`POST /v1/jobs/{id}/replay`: a failed, dead-lettered or cancelled job of this tenant, queued again."""
        self.queries.get(tenant, job_id)  # NotFound for another tenant's
        return self.replay(job_id)

    def replay(self, job_id: str, *, enqueue: bool = True) -> Job:
        """Queue a failed, dead-lettered or cancelled job again (`core.jobs.replay`: the same answer everywhere)."""
        return self.replays.replay(job_id, enqueue=enqueue)

    def thread(self, tenant: str | None, thread_id: str) -> ThreadView:
        """`GET /v1/threads/{id}`: the turns the thread keeps, oldest first."""
        owner = _tenant_of_thread(tenant)
        found = self.threads.view(owner, thread_id)
        if found is None:
            raise NotFound(f"no thread {thread_id!r} for this tenant")
        turns, reveal = found.pop("turns"), revealer(self.safety.thread_table(owner, thread_id))
        return ThreadView(messages=[message_of(t._replace(text=reveal(t.text))) for t in turns], **found)

    def erase_thread(self, tenant: str | None, thread_id: str) -> ThreadErased:
        """`DELETE /v1/threads/{id}`: the thread forgotten and its jobs' turns blanked."""
        owner = _tenant_of_thread(tenant)
        erased = self.threads.erase(owner, thread_id)
        if erased is None:
            raise NotFound(f"no thread {thread_id!r} for this tenant")
        return ThreadErased(
            thread_id=thread_id,
            erased_jobs=erased,
            erased_objects=_dropped(self.blobs, self.streams, owner, thread_id, erased),
        )

    def cancel(self, tenant: str | None, job_id: str) -> Job:
        """`DELETE /v1/jobs/{id}`: the job ends `cancelled`, and its callback (if it has one) is queued; a
        workflow's children not started never start."""
        self.queries.get(tenant, job_id)  # NotFound for another tenant's
        return self.unit.at_once(self._cancel, job_id)  # the ending, its count and its callback: together

    def _cancel(self, job_id: str) -> Job:
        job = self.ledger.cancel(job_id)  # raises unless this write ended it
        self.aftermath.after(job)
        return job


def _tenant_of_thread(tenant: str | None) -> str:
    if tenant is None:
        raise InputError("threads are a tenant's: use the tenant's API key", field="Authorization")
    return tenant


def _dropped(blobs: BlobStore | None, streams: StreamLog, tenant: str, thread_id: str, job_ids: list[str]) -> int:
    """What an erased thread's jobs left in the blob store and the stream logs, deleted: its inline images (kept
    under the thread's own prefix) and its streamed answers; how many objects. A `blob:` image the client uploaded
    is the client's own."""
    streamed = sum(streams.erase(j) for j in job_ids)
    if blobs is None:
        return streamed
    images = blobs.list(thread_prefix(tenant, thread_id))
    for k in images:
        blobs.delete(k)
    return streamed + len(images)
