"""The query parameters of the API's reads (job listings, spend and outcome reports), checked and turned into
what the services take; whose data a caller may read (a tenant's key its own; an operator's any tenant's)."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from typing import NamedTuple

from core.entrypoints.auth import Caller
from core.entrypoints.routes import LIST_LIMIT, PATH_PARAM
from core.errors import Forbidden, InputError
from core.governance.spend import day_start, default_since
from core.jobs.filters import JobFilter
from core.models import NAME_PATTERN, JobStatus

MAX_TEXT = 200


class Listing(NamedTuple):
    tenant: str | None  # None: every tenant's (an operator's listing)
    status: JobStatus | None
    limit: int
    parent: str | None
    cursor: str | None
    where: JobFilter


def listing(query: Mapping[str, str], caller: Caller) -> Listing:
    """`GET /v1/jobs`'s parameters; InputError names the one that is wrong."""
    status, raw_limit = query.get("status"), query.get("limit", "50")
    if status is not None and status not in JobStatus.__members__:
        raise InputError(f"status must be one of {', '.join(JobStatus.__members__)}", field="status")
    if not (raw_limit.isdigit() and 1 <= int(raw_limit) <= LIST_LIMIT):
        raise InputError(f"limit must be an integer from 1 to {LIST_LIMIT}", field="limit")
    parent = query.get("parent")
    if parent is not None and not re.fullmatch(PATH_PARAM, parent):
        raise InputError("parent must be a job id", field="parent")
    text = query.get("q") or None
    if text is not None and len(text) > MAX_TEXT:
        raise InputError(f"q is {len(text)} characters; search with at most {MAX_TEXT}", field="q")
    where = JobFilter(
        top_level=_flag(query, "top_level"),
        task=query.get("task") or None,
        text=text,
        since=_time(query, "since"),
        until=_time(query, "until"),
    )
    return Listing(
        scope(query, caller),
        JobStatus(status) if status else None,
        int(raw_limit),
        parent,
        query.get("cursor") or None,
        where,
    )


def scope(query: Mapping[str, str], caller: Caller) -> str | None:
    """Whose jobs or spend a read covers: a tenant's key, its own; an operator's, `?tenant=` or every tenant."""
    asked = query.get("tenant")
    if asked is not None and not re.fullmatch(NAME_PATTERN, asked):
        raise InputError("tenant must be a tenant name", field="tenant")
    if not caller.operator:
        if asked is not None and asked != caller.tenant:
            raise Forbidden("a tenant's key reads its own tenant's data; another tenant's needs an operator key")
        return caller.tenant
    return asked


def report_days(query: Mapping[str, str]) -> float:
    """A report's first day (`since`, a UTC day YYYY-MM-DD); default: the last 30 days. The ledgers keep a year,
    so an older day reports from 366 days back, and a day to come reports nothing yet."""
    raw, now = query.get("since"), time.time()
    if raw is None:
        return default_since(now)
    try:
        t = day_start(raw)
    except ValueError:
        raise InputError("since must be a UTC day, YYYY-MM-DD", field="since") from None
    return max(t, day_start(time.strftime("%Y-%m-%d", time.gmtime(now - 366 * 86400))))


def group_by(query: Mapping[str, str], dimensions: tuple[str, ...], caller: Caller) -> list[str]:
    """A report's `group_by` dimensions; `tenant` only for an operator (a tenant's report is one tenant's)."""
    allowed = [d for d in dimensions if d != "tenant" or caller.operator]
    by = [d for d in query.get("group_by", "day").split(",") if d]
    if bad := [d for d in by if d not in allowed]:
        raise InputError(f"group_by: '{bad[0]}' is not one of {', '.join(allowed)}", field="group_by")
    return by


def _flag(query: Mapping[str, str], name: str) -> bool:
    raw = query.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise InputError(f"{name} must be true or false", field=name)
    return raw in ("true", "1")


def _time(query: Mapping[str, str], name: str) -> float | None:
    """A creation bound: epoch seconds, or a UTC day (YYYY-MM-DD, its start)."""
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = day_start(raw) if "-" in raw[1:] else float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise InputError(f"{name} must be epoch seconds or a UTC day, YYYY-MM-DD", field=name)
    return value
