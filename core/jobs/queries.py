"""Reading jobs, tenant-scoped: one job, its public view, a listing, and the operator's dead-letter state."""

from __future__ import annotations

import json
from typing import Any, Iterator, NamedTuple

from core.errors import NotFound
from core.models import Job, JobStatus
from core.paging import Position, offset_cursor, position_cursor, read_offset, read_position
from core.ports import JobStore
from core.streaming.log import StreamLog, source
from core.views import JobView, Partial


class Queries:
    def __init__(self, store: JobStore, streams: StreamLog | None = None) -> None:
        self.store = store
        self.streams = streams

    def get(self, tenant: str, job_id: str) -> Job:
        job = self.store.get(job_id)
        if job is None or job.tenant != tenant:
            raise NotFound(f"job {job_id} not found")
        return job

    def view(self, tenant: str, job_id: str) -> JobView:
        job = self.get(tenant, job_id)
        return JobView.of(job, self.partial(job))

    def partial(self, job: Job) -> Partial | None:
        """A running streaming job's text so far (None once it is terminal: the result is the text)."""
        if not job.request.stream or job.status.terminal or self.streams is None:
            return None
        snap = self.streams.read(source(job))
        return Partial(text=snap.text, seq=snap.seq, attempt=snap.attempt) if snap is not None else None

    def page(self, tenant: str | None, *, status: JobStatus | None = None, limit: int = 50,
             cursor: str | None = None) -> JobPage:
        """Newest first, `limit` at a time; `cursor` (a page's `next_cursor`) continues after that page.
        `tenant=None` lists every tenant's (the operator's CLI, never the HTTP API)."""
        after = read_position(cursor) if cursor else None
        jobs = self.store.list(tenant=tenant, status=status, limit=limit + 1, after=after)  # one more: is there a next?
        if len(jobs) <= limit:
            return JobPage(jobs, None)
        last = jobs[limit - 1]
        return JobPage(jobs[:limit], position_cursor(Position(last.created_at, last.id)))

    def children_page(self, tenant: str, parent_id: str, *, status: JobStatus | None = None, limit: int = 50,
                      cursor: str | None = None) -> JobPage:
        """A workflow's children, step by step and in order, read by their deterministic ids from the parent's
        steps (no store needs an index on `parent`); the cursor is an offset into that fixed order."""
        parent = self.get(tenant, parent_id)
        start = read_offset(cursor) if cursor else 0
        found: list[Job] = []
        for n, cid in enumerate(_child_ids(parent)):
            if n < start:
                continue
            child = self.store.get(cid)
            if child is None or (status is not None and child.status is not status):
                continue
            if len(found) == limit:  # one more exists: the next page starts here
                return JobPage(found, offset_cursor(n))
            found.append(child)
        return JobPage(found, None)


class JobPage(NamedTuple):
    jobs: list[Job]
    next_cursor: str | None  # None on the last page


def _child_ids(parent: Job) -> Iterator[str]:
    from core.workflows.plan import round_ids

    for k, step in enumerate(parent.workflow.steps if parent.workflow else []):
        for round_, nodes in enumerate(step.rounds):
            yield from round_ids(parent.id, k, round_, nodes)


def job_json(job: Job) -> str:
    return json.dumps(JobView.of(job).model_dump(mode="json"), indent=2)


def dead_letter_state(job: Job) -> dict[str, Any]:
    """Everything needed to review and replay a dead-lettered job, without the raw prompt."""
    return {
        "job_id": job.id,
        "tenant": job.tenant,
        "status": job.status.value,
        "trace_id": job.trace_id,
        "input_hash": job.request_hash,
        "prompt_template": job.prompt_template,
        "route": job.route.model_dump(mode="json") if job.route else None,
        "context_chunks": job.context_chunks,
        "provider_calls": job.provider_calls,
        "attempts": [a.model_dump(mode="json") for a in job.attempts],
        "error": job.error.model_dump(mode="json") if job.error else None,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
    }
