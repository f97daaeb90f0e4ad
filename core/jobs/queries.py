"""Reading jobs, tenant-scoped: one job, its public view, a listing, and the operator's dead-letter state."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from core.errors import NotFound
from core.jobs.filters import EVERY, SCAN_CAP, JobFilter
from core.models import Job, JobStatus
from core.paging import Position, offset_cursor, position_cursor, read_offset, read_position
from core.ports import JobStore
from core.safety.placeholders import Reveal
from core.streaming.log import StreamLog, source
from core.views import JobView, Partial


class Queries:
    def __init__(
        self, store: JobStore, streams: StreamLog | None = None, reveal: Callable[[Job], Reveal] | None = None
    ) -> None:
        self.store = store
        self.streams = streams
        self.reveal = reveal  # restores what a safety policy redacted, from the job's sealed values

    def view_of(self, job: Job, partial: Partial | None = None) -> JobView:
        """The job as a client reads it (the one place a view is made from a stored job)."""
        return JobView.of(job, partial, self.reveal(job) if self.reveal is not None else None)

    def get(self, tenant: str | None, job_id: str) -> Job:
        """The job, if it is `tenant`'s (`None`: an operator's read, any tenant's)."""
        job = self.store.get(job_id)
        if job is None or (tenant is not None and job.tenant != tenant):
            raise NotFound(f"job {job_id} not found")
        return job

    def view(self, tenant: str | None, job_id: str) -> JobView:
        job = self.get(tenant, job_id)
        return self.view_of(job, self.partial(job))

    def partial(self, job: Job) -> Partial | None:
        """A running streaming job's text so far (None once it is terminal: the result is the text)."""
        if not job.request.stream or job.status.terminal or self.streams is None:
            return None
        snap = self.streams.read(source(job))
        if snap is None:
            return None
        return Partial(text=snap.text, seq=snap.seq, attempt=snap.attempt, retracted_at=snap.retracted or None)

    def page(
        self,
        tenant: str | None,
        *,
        status: JobStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
        where: JobFilter = EVERY,
    ) -> JobPage:
        """Newest first, `limit` at a time; `cursor` (a page's `next_cursor`) continues after that page.
        `tenant=None` lists every tenant's (an operator). Filters the stores don't index (`where`) are applied
        while reading; after `SCAN_CAP` jobs read the page ends short, its cursor where the reading stopped."""
        after = read_position(cursor) if cursor else where.start()
        batch = max(limit + 1, 200) if where.narrows else limit + 1  # one more: is there a next page?
        found: list[Job] = []
        scanned = 0
        while True:
            jobs = self.store.list(tenant=tenant, status=status, limit=batch, after=after)
            for job in jobs:
                if where.past(job):
                    return _page(found, limit)
                scanned += 1
                if where.matches(job):
                    found.append(job)
                    if len(found) > limit:
                        return _page(found, limit)
                if scanned >= SCAN_CAP:
                    return JobPage(found, position_cursor(Position(job.created_at, job.id)))
            if len(jobs) < batch:
                return _page(found, limit)
            after = Position(jobs[-1].created_at, jobs[-1].id)

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
        """A workflow's children, step by step and in order, read by their deterministic ids from the parent's
        steps (no store needs an index on `parent`); the cursor is an offset into that fixed order."""
        parent = self.get(tenant, parent_id)
        start = read_offset(cursor) if cursor else 0
        where = where._replace(top_level=False)  # children are steps by definition
        found: list[Job] = []
        for n, cid in enumerate(_child_ids(parent)):
            if n < start:
                continue
            child = self.store.get(cid)
            if child is None or (status is not None and child.status is not status) or not where.matches(child):
                continue
            if len(found) == limit:  # one more exists: the next page starts here
                return JobPage(found, offset_cursor(n))
            found.append(child)
        return JobPage(found, None)


class JobPage(NamedTuple):
    jobs: list[Job]
    next_cursor: str | None  # None on the last page


def _page(found: list[Job], limit: int) -> JobPage:
    """The page of the first `limit` jobs found; a cursor when one more was found."""
    if len(found) <= limit:
        return JobPage(found, None)
    last = found[limit - 1]
    return JobPage(found[:limit], position_cursor(Position(last.created_at, last.id)))


def _child_ids(parent: Job) -> Iterator[str]:
    from core.workflows.plan import round_ids

    for k, step in enumerate(parent.workflow.steps if parent.workflow else []):
        for round_, nodes in enumerate(step.rounds):
            yield from round_ids(parent.id, k, round_, nodes)


def job_json(view: JobView) -> str:
    return json.dumps(view.model_dump(mode="json"), indent=2)


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
