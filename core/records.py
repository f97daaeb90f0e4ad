"""Reading stored job records (`stored_job`), and for listings: one this version can't parse is logged
and left out, so a single bad row (written before requests were shape-checked, or by a newer version)
never takes a listing, a reconcile sweep or a dead-letter view down with it. Every job store uses it."""

from __future__ import annotations

import logging

from core.logs import log_event
from core.models import Job
from core.validation import STORED


def stored_job(data: str | bytes) -> Job:
    """A job record as a store holds it: types validated, the request's submit-time bounds not re-checked."""
    return Job.model_validate_json(data, context=STORED)


def listed_job(data: str) -> Job | None:
    try:
        return stored_job(data)
    except ValueError as e:
        log_event("store.unreadable_job", logging.ERROR, error=str(e)[:300], record=data[:200])
        return None


def listed_jobs(rows: list[str]) -> list[Job]:
    return [job for data in rows if (job := listed_job(data)) is not None]
