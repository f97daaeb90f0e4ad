"""What a job listing may be narrowed by beyond tenant and status (which stores index): top-level jobs only,
a task, a text, a creation time range. Stores keep no index for these, so a listing reads its index in
order and keeps the jobs that match, reading at most `SCAN_CAP` jobs per page; a page may then hold fewer
jobs than asked, with a cursor to carry on from where the reading stopped."""

from __future__ import annotations

from typing import NamedTuple

from core.models import Job
from core.paging import Position

SCAN_CAP = 2_000  # jobs read for one page at most: a page's latency stays bounded however rare the matches


class JobFilter(NamedTuple):
    top_level: bool = False  # leave a workflow's child steps out (list them with parent=)
    task: str | None = None  # exactly this task
    text: str | None = None  # in the id, prompt, task, model, workflow or error message (any case)
    since: float | None = None  # created at or after (epoch seconds)
    until: float | None = None  # created before (epoch seconds)

    @property
    def narrows(self) -> bool:
        """Whether some job the store returns may be left out (so pages are read in bigger batches)."""
        return self.top_level or self.task is not None or self.text is not None

    def start(self) -> Position | None:
        """Where the first page starts: before `until` (every id sorts after '')."""
        return Position(self.until, "") if self.until is not None else None

    def past(self, job: Job) -> bool:
        """Whether the listing, newest first, has gone past `since`: no later job can match."""
        return self.since is not None and job.created_at < self.since

    def matches(self, job: Job) -> bool:
        if self.top_level and job.parent is not None:
            return False
        if self.task is not None and job.request.task != self.task:
            return False
        return self.text is None or self.text.casefold() in _searchable(job)


EVERY = JobFilter()


def _searchable(job: Job) -> str:
    parts = [
        job.id,
        job.request.ask().question,
        job.request.task or "",
        job.request.workflow or "",
        job.route.model if job.route else "",
        job.error.message if job.error else "",
    ]
    return "\n".join(parts).casefold()
