"""The HTTP route table: method, path template, the handler's name, and what OpenAPI documents of it.

`core.entrypoints.http.Api` dispatches by it and `core.entrypoints.openapi` generates the spec from it,
with the request and response models named here.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from core.jobs.filters import SCAN_CAP
from core.models import NAME_PATTERN, JobRequest, JobStatus
from core.views import (
    JobList,
    JobView,
    Me,
    ModelStates,
    OutcomeReport,
    SubmitResponse,
    ThreadErased,
    ThreadView,
    UsageReport,
)

LIST_LIMIT = 200
PATH_PARAM = "[A-Za-z0-9_-]{1,128}"  # what a `{name}` in a path template matches (job ids)


class Param(NamedTuple):
    name: str
    where: str  # "query" | "header" | "path"
    schema: Mapping[str, Any]


class Route(NamedTuple):
    method: str
    path: str  # a template: `/v1/jobs/{job_id}`
    handler: str  # the Api method that serves it
    summary: str
    auth: bool = True
    body: type | None = None  # the request model
    response: type | None = None  # the response model
    status: int = 200
    errors: Mapping[int, str] = MappingProxyType({})
    params: tuple[Param, ...] = ()
    media_type: str = "application/json"  # of the success response


SINCE = Param(
    "since",
    "query",
    {"type": "string", "format": "date", "description": "First UTC day, YYYY-MM-DD (default: 30 days back; kept 366)."},
)
TENANT = Param(
    "tenant",
    "query",
    {
        "type": "string",
        "pattern": NAME_PATTERN,
        "description": "An operator's key: only this tenant's (default: every tenant's).",
    },
)

THREAD_ID = Param("thread_id", "path", {"type": "string", "pattern": f"^{PATH_PARAM}$"})

ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", "health", "Liveness", auth=False),
    Route("GET", "/openapi.json", "openapi", "This document", auth=False),
    Route(
        "POST",
        "/v1/jobs",
        "submit",
        "Submit a job",
        body=JobRequest,
        response=SubmitResponse,
        status=202,
        errors={
            400: "Malformed JSON",
            401: "Missing or invalid API key",
            413: "Body too large",
            415: "Not JSON",
            422: "Invalid field, or Idempotency-Key reused with another body",
            429: "The tenant's spend budget is used up: retry after Retry-After seconds (when it resets)",
            503: "Stored, but the queue is unavailable: retry with the same Idempotency-Key",
        },
        params=(Param("Idempotency-Key", "header", {"type": "string", "minLength": 1, "maxLength": 255}),),
    ),
    Route(
        "GET",
        "/v1/jobs",
        "list_jobs",
        "List jobs, newest first, a page at a time (or a workflow's children). "
        "Filters other than status are applied while reading: a page may hold fewer jobs than `limit` (after "
        f"{SCAN_CAP} read) and still have a `next_cursor`",
        response=JobList,
        errors={
            401: "Missing or invalid API key",
            403: "A tenant's key asked for another tenant's jobs",
            404: "No such parent job (or another tenant's)",
            422: "Invalid query parameter",
        },
        params=(
            Param("status", "query", {"type": "string", "enum": [s.value for s in JobStatus]}),
            Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": LIST_LIMIT}),
            Param(
                "parent",
                "query",
                {
                    "type": "string",
                    "pattern": f"^{PATH_PARAM}$",
                    "description": "List this workflow job's children, step by step.",
                },
            ),
            Param(
                "cursor",
                "query",
                {
                    "type": "string",
                    "maxLength": 512,
                    "description": "The next page: `next_cursor` of the previous page, with the same filters.",
                },
            ),
            Param(
                "top_level",
                "query",
                {"type": "boolean", "description": "Leave workflows' child steps out (list them with parent=)."},
            ),
            Param("task", "query", {"type": "string", "description": "Only jobs of this task."}),
            Param(
                "q",
                "query",
                {
                    "type": "string",
                    "maxLength": 200,
                    "description": "Text in the id, prompt, task, model, workflow or error message (any case).",
                },
            ),
            Param(
                "since",
                "query",
                {"type": "string", "description": "Created at or after: epoch seconds or a UTC day, YYYY-MM-DD."},
            ),
            Param("until", "query", {"type": "string", "description": "Created before: epoch seconds or a UTC day."}),
            TENANT,
        ),
    ),
    Route(
        "GET",
        "/v1/jobs/{job_id}",
        "get_job",
        "Get a job (with `after` or `wait_s`: long-poll for new text)",
        response=JobView,
        errors={
            401: "Missing or invalid API key",
            404: "Not found (or another tenant's)",
            422: "Invalid after or wait_s",
        },
        params=(
            Param("job_id", "path", {"type": "string", "pattern": f"^{PATH_PARAM}$"}),
            Param(
                "after",
                "query",
                {
                    "type": "string",
                    "pattern": "^([0-9]{1,9}:)?[0-9]{1,9}$",
                    "description": "Answer once the job has text after this `ATTEMPT:SEQ` (or SEQ), or has ended.",
                },
            ),
            Param(
                "wait_s",
                "query",
                {
                    "type": "number",
                    "minimum": 0,
                    "maximum": 900,
                    "description": "Wait up to this long (capped at stream.max_wait_s).",
                },
            ),
        ),
    ),
    Route(
        "GET",
        "/v1/jobs/{job_id}/events",
        "job_events",
        "A streaming job's output as Server-Sent Events",
        errors={
            401: "Missing or invalid API key",
            404: "Not found (or another tenant's)",
            422: "Invalid Last-Event-ID or wait_s",
        },
        params=(
            Param("job_id", "path", {"type": "string", "pattern": f"^{PATH_PARAM}$"}),
            Param("Last-Event-ID", "header", {"type": "string", "pattern": "^(([0-9]{1,9}:)?[0-9]{1,9})?$"}),
            Param("wait_s", "query", {"type": "number", "minimum": 0, "maximum": 900}),
        ),
        media_type="text/event-stream",
    ),
    Route(
        "GET",
        "/v1/usage",
        "usage",
        "Spend and savings, summed by task, model, lane or day (an operator: and tenant)",
        response=UsageReport,
        errors={
            401: "Missing or invalid API key",
            403: "Another tenant's, with a tenant's key",
            422: "Invalid since, group_by or tenant",
        },
        params=(
            SINCE,
            Param(
                "group_by",
                "query",
                {
                    "type": "string",
                    "pattern": "^((tenant|task|model|lane|day),?)*$",
                    "description": "Comma-separated: task, model, lane, day, and for an operator tenant (default day).",
                },
            ),
            TENANT,
        ),
    ),
    Route(
        "GET",
        "/v1/outcomes",
        "outcomes",
        "How jobs ended: counts and latency percentiles by task, status, model or day (an operator: and tenant)",
        response=OutcomeReport,
        errors={
            401: "Missing or invalid API key",
            403: "Another tenant's, with a tenant's key",
            422: "Invalid since, group_by or tenant",
        },
        params=(
            SINCE,
            Param(
                "group_by",
                "query",
                {
                    "type": "string",
                    "pattern": "^((tenant|task|status|model|day),?)*$",
                    "description": "Comma-separated: task, status, model, day, and "
                    "for an operator tenant (default day).",
                },
            ),
            TENANT,
        ),
    ),
    Route(
        "GET",
        "/v1/me",
        "me",
        "Whose key this is: a tenant's, or an operator's (and the tenants it reads)",
        response=Me,
        errors={401: "Missing or invalid API key"},
    ),
    Route(
        "DELETE",
        "/v1/jobs/{job_id}",
        "cancel_job",
        "Cancel a job (a workflow: children not started never start)",
        response=JobView,
        errors={
            401: "Missing or invalid API key",
            404: "Not found (or another tenant's)",
            409: "Already finished (succeeded, failed, dead-lettered or cancelled)",
        },
        params=(Param("job_id", "path", {"type": "string", "pattern": f"^{PATH_PARAM}$"}),),
    ),
    Route(
        "POST",
        "/v1/jobs/{job_id}/replay",
        "replay_job",
        "Replay a failed, dead-lettered or cancelled job with a fresh attempt budget",
        response=JobView,
        errors={
            401: "Missing or invalid API key",
            404: "Not found (or another tenant's)",
            409: "Not replayable (queued, running or succeeded; or a workflow, which workers replay)",
            503: "The queue is unavailable: nothing was replayed, try again",
        },
        params=(Param("job_id", "path", {"type": "string", "pattern": f"^{PATH_PARAM}$"}),),
    ),
    Route(
        "GET",
        "/v1/threads/{thread_id}",
        "get_thread",
        "A thread's turns, oldest first (what the model is sent before a new turn, before any fitting)",
        response=ThreadView,
        errors={401: "Missing or invalid API key", 404: "No such thread (or another tenant's)"},
        params=(THREAD_ID,),
    ),
    Route(
        "DELETE",
        "/v1/threads/{thread_id}",
        "erase_thread",
        "Erase a thread: it is forgotten, and its jobs' prompts, messages and replies are blanked",
        response=ThreadErased,
        errors={401: "Missing or invalid API key", 404: "No such thread (or another tenant's)"},
        params=(THREAD_ID,),
    ),
    Route(
        "GET",
        "/v1/providers",
        "providers",
        "Each model's circuit breaker and rate buckets (shared state)",
        response=ModelStates,
        errors={401: "Missing or invalid API key", 501: "This deployment's api function has no model catalog"},
    ),
)
