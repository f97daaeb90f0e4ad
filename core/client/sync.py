"""`Client`: the HTTP API's calls from Python, blocking, on the standard library's HTTP (nothing to install).

Requests are the API's own `JobRequest`, validated here before anything is sent; answers are `SubmitResponse` and
`JobView`. A submit carries an Idempotency-Key (one is made when none is given), so the client can retry a 503 or a
broken connection without running a job twice. `wait` long-polls (`?wait_s=`), `stream` reads Server-Sent Events
and resumes with `Last-Event-ID` after a dropped connection.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from core.client.errors import ApiError, Unreachable
from core.client.events import StreamEvent, parse_sse
from core.job_request import JobRequest
from core.views import JobList, JobView, SubmitResponse, ThreadErased, ThreadView

TERMINAL = frozenset({"succeeded", "failed", "dead_lettered", "cancelled"})
POLL_S = 25.0  # one long poll: under the API's stream.max_wait_s cap and any proxy's idle timeout
RETRY_AFTER_CAP_S = 30.0  # a Retry-After longer than this is the caller's to honour, not a blocked call's


class Client:
    def __init__(
        self, url: str | None = None, api_key: str | None = None, *, timeout_s: float = 30.0, retries: int = 2
    ) -> None:
        """`url` and `api_key` default to ALTO_URL and ALTO_API_KEY. `retries`: further tries of a call that met a
        503, a 429 with a short Retry-After, or a broken connection (a submit only with its Idempotency-Key)."""
        base = url or os.environ.get("ALTO_URL", "")
        parts = urllib.parse.urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{base!r} is not an http(s) URL: give the API's base URL, or set ALTO_URL")
        key = api_key if api_key is not None else os.environ.get("ALTO_API_KEY")
        if not key:
            raise ValueError("no API key: pass api_key, or set ALTO_API_KEY")
        self.base, self._key, self.timeout_s, self.retries = base.rstrip("/"), key, timeout_s, retries

    # ------------------------------------------------------------------ the jobs

    def submit(
        self, request: JobRequest | dict[str, Any] | None = None, *, idempotency_key: str | None = None, **fields: Any
    ) -> SubmitResponse:
        """Submit a job: a `JobRequest`, its fields as a dict, or as keywords (`prompt=`, `messages=`, ...)."""
        job = request if isinstance(request, JobRequest) else JobRequest.model_validate({**(request or {}), **fields})
        body = job.model_dump(mode="json", exclude_defaults=True, by_alias=True)
        key = idempotency_key or f"client-{uuid.uuid4().hex}"  # so a retried submit is the same job
        return SubmitResponse.model_validate(self.call("POST", "/v1/jobs", body, headers={"Idempotency-Key": key}))

    def get(self, job_id: str) -> JobView:
        return JobView.model_validate(self.call("GET", f"/v1/jobs/{_q(job_id)}"))

    def wait(
        self, job_id: str, *, timeout_s: float = 300.0, on_view: Callable[[JobView], None] | None = None
    ) -> JobView:
        """The job's view once it has ended, long-polling the API; TimeoutError when `timeout_s` runs out first.
        `on_view` sees each view before then (a queued job's `waiting` says what it waits for)."""
        deadline, after = time.monotonic() + timeout_s, "0"
        while True:
            left = deadline - time.monotonic()
            wait = max(0.0, min(POLL_S, left))
            view = JobView.model_validate(
                self.call("GET", f"/v1/jobs/{_q(job_id)}?after={after}&wait_s={wait:.1f}", timeout_s=wait + 30)
            )
            if view.status.value in TERMINAL:
                return view
            if on_view is not None:
                on_view(view)
            if view.partial is not None:  # a streaming job's text moved on: wait for what comes after it
                after = f"{view.partial.attempt}:{view.partial.seq}"
            if time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} is still {view.status.value} after {timeout_s:.0f} s")

    def stream(self, job_id: str, *, timeout_s: float = 300.0) -> Iterator[StreamEvent]:
        """A streaming job's events until `done`; a dropped connection (or a runtime that ends each response) is
        resumed from the last event's id, so no text is repeated or lost."""
        deadline, last_id = time.monotonic() + timeout_s, ""
        while time.monotonic() < deadline:
            try:
                for event in self._events(job_id, last_id, deadline):
                    last_id = event.id or last_id
                    yield event
                    if event.event == "done":
                        return
            except Unreachable:
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))  # the SSE `retry:` the API asks for
        raise TimeoutError(f"job {job_id} had not ended after {timeout_s:.0f} s of streaming")

    def _events(self, job_id: str, last_id: str, deadline: float) -> Iterator[StreamEvent]:
        wait = max(1.0, min(POLL_S, deadline - time.monotonic()))
        headers = {"Accept": "text/event-stream", **({"Last-Event-ID": last_id} if last_id else {})}
        with self._open("GET", f"/v1/jobs/{_q(job_id)}/events?wait_s={wait:.0f}", None, headers, wait + 30) as r:
            try:
                yield from parse_sse(line.decode() for line in r)
            except (OSError, ValueError, http.client.HTTPException) as e:  # the connection broke mid-event
                raise Unreachable(f"the event stream of {job_id} broke: {e}") from None

    def cancel(self, job_id: str) -> JobView:
        return JobView.model_validate(self.call("DELETE", f"/v1/jobs/{_q(job_id)}"))

    def replay(self, job_id: str) -> JobView:
        """Run a failed, dead-lettered or cancelled job again with a fresh attempt budget."""
        return JobView.model_validate(self.call("POST", f"/v1/jobs/{_q(job_id)}/replay"))

    def thread(self, thread_id: str) -> ThreadView:
        """A thread's turns, oldest first (`thread_id=` on submit keeps a conversation on the service)."""
        return ThreadView.model_validate(self.call("GET", f"/v1/threads/{_q(thread_id)}"))

    def erase_thread(self, thread_id: str) -> ThreadErased:
        """Forget a thread and blank its jobs' prompts, messages and replies."""
        return ThreadErased.model_validate(self.call("DELETE", f"/v1/threads/{_q(thread_id)}"))

    def jobs(self, *, status: str | None = None, limit: int = 50, **filters: str) -> Iterator[JobView]:
        """The tenant's jobs, newest first, page after page (`task`, `q`, `since`, `until`, `parent` filter)."""
        query = {k: v for k, v in {"status": status, "limit": str(limit), **filters}.items() if v is not None}
        while True:
            page = JobList.model_validate(self.call("GET", "/v1/jobs?" + urllib.parse.urlencode(query)))
            yield from page.jobs
            if page.next_cursor is None:
                return
            query["cursor"] = page.next_cursor

    # ------------------------------------------------------------------ the wire

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        """One API call's JSON answer, retried as the constructor says; ApiError or Unreachable otherwise. A 503 or
        a short 429 is retried on any route (the API did nothing); a broken connection only where a second try
        cannot act twice: a read, or a submit with its Idempotency-Key (a cancel or replay may have happened)."""
        repeatable = method == "GET" or bool(headers and "Idempotency-Key" in headers)
        for tries_left in range(self.retries, -1, -1):
            try:
                with self._open(method, path, body, headers or {}, timeout_s or self.timeout_s) as r:
                    return json.loads(r.read() or b"null")
            except ApiError as e:
                if not (tries_left and _retry_soon(e)):
                    raise
                time.sleep(e.retry_after_s or 1.0)
            except Unreachable:
                if not (repeatable and tries_left):
                    raise
                time.sleep(1.0)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _open(self, method: str, path: str, body: Any, headers: dict[str, str], timeout_s: float) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self._key}",
                "Accept": "application/json",
                **({"Content-Type": "application/json"} if data is not None else {}),
                **headers,
            },
        )
        try:
            return urllib.request.urlopen(req, timeout=timeout_s)
        except urllib.error.HTTPError as e:
            raise _api_error(e) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            reason = getattr(e, "reason", e)
            raise Unreachable(f"cannot reach {self.base}: {reason}; check the URL and that the service is up") from None


def _q(job_id: str) -> str:
    return urllib.parse.quote(job_id, safe="")


def _retry_soon(e: ApiError) -> bool:
    return e.status == 503 or (e.status == 429 and (e.retry_after_s or 0) <= RETRY_AFTER_CAP_S)


def _api_error(e: urllib.error.HTTPError) -> ApiError:
    """The API's `error` object (code, message, field) and Retry-After, or the HTTP reason when the body is not
    the API's (a proxy's page)."""
    retry = e.headers.get("retry-after") if e.headers else None
    retry_after = float(retry) if retry and retry.replace(".", "", 1).isdigit() else None
    try:
        err = json.loads(e.read())["error"]
        return ApiError(
            e.code, str(err.get("code", "")), str(err["message"]), field=err.get("field"), retry_after_s=retry_after
        )
    except (ValueError, KeyError, TypeError):
        return ApiError(e.code, "", str(e.reason), retry_after_s=retry_after)
