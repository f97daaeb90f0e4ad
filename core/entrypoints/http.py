"""The HTTP API as a plain function of (method, path, headers, body), so the local server and every
cloud handler (API Gateway, Cloud Functions, Azure Functions) serve identical routes, auth and errors.

Routes are one table (`core.entrypoints.routes.ROUTES`), which `core.entrypoints.openapi` also reads to
generate the spec from the same pydantic models; errors map to statuses through one table (`ERRORS`).
"""

from __future__ import annotations

import logging
import re
import weakref
from collections.abc import Callable
from typing import Any

from core.entrypoints import reads
from core.entrypoints.auth import ApiKeys, Caller
from core.entrypoints.messages import MAX_BODY_BYTES, ApiRequest, ApiResponse, error
from core.entrypoints.parsing import job_request, trace_from, wait_s
from core.entrypoints.routes import PATH_PARAM, ROUTES
from core.errors import (
    AltoError,
    BudgetExhausted,
    ConfigError,
    Forbidden,
    IdempotencyConflict,
    InputError,
    NotFound,
    QueueUnavailable,
)
from core.governance.spend import DIMENSIONS, day_of
from core.jobs.service import ApiService
from core.logs import log_event
from core.views import JobList, Me, OutcomeReport, SubmitResponse, UsageReport

# exception → (status, code); InputError carries its own status. Most specific first.
ERRORS: tuple[tuple[type[AltoError], int, str], ...] = (
    (IdempotencyConflict, 422, "idempotency_key_reused"),
    (InputError, 422, "invalid_request"),
    (NotFound, 404, "not_found"),
    (Forbidden, 403, "forbidden"),
    (BudgetExhausted, 429, "budget_exhausted"),
    (QueueUnavailable, 503, "queue_unavailable"),
    (ConfigError, 500, "config_error"),
)


def error_for(e: AltoError) -> ApiResponse | None:
    found = next(((status, code) for cls, status, code in ERRORS if isinstance(e, cls)), None)
    if found is None:
        return None
    status, code = found
    if isinstance(e, InputError):
        return error(e.status, code, str(e), e.field)
    if isinstance(e, IdempotencyConflict):
        return error(status, code, str(e), "Idempotency-Key")
    if isinstance(e, BudgetExhausted):
        resp = error(status, code, str(e))
        resp.headers["retry-after"] = str(int(e.retry_after_s) + 1)
        return resp
    if isinstance(e, QueueUnavailable):
        resp = error(status, code, str(e), job_id=e.job_id)
        resp.headers["retry-after"] = "5"
        return resp
    if isinstance(e, ConfigError):
        log_event("api.config_error", error=str(e))
    return error(status, code, str(e))


def _pattern(template: str) -> re.Pattern[str]:
    """`/v1/jobs/{job_id}` as a regex: literal parts escaped (`/openapi.json` matches only itself)."""
    parts = re.split(r"\{(\w+)\}", template)  # literal, name, literal, ...
    return re.compile(
        "^" + "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>{PATH_PARAM})" for i, p in enumerate(parts)) + "$"
    )


_MATCHERS = tuple((_pattern(r.path), r) for r in ROUTES)


class Api:
    def __init__(self, service: ApiService, keys: ApiKeys, *, public_url: str | None = None) -> None:
        self.service = service
        self.keys = keys
        self.public_url = public_url.rstrip("/") if public_url else None

    def handle(self, req: ApiRequest) -> ApiResponse:
        try:
            return self._dispatch(req)
        except AltoError as e:
            if (resp := error_for(e)) is not None:
                return resp
            return self._unhandled(e, req)
        except Exception as e:
            return self._unhandled(e, req)

    def _unhandled(self, e: Exception, req: ApiRequest) -> ApiResponse:
        # the client gets an id-free generic error; the log has the details
        log_event("api.unhandled", logging.ERROR, error=repr(e)[:500], path=req.path)
        return error(500, "internal_error", "internal error; the request may be retried safely with an Idempotency-Key")

    def _dispatch(self, req: ApiRequest) -> ApiResponse:
        method, path = req.method.upper(), req.path.rstrip("/") or "/"
        matched = [(m.groupdict(), r) for pattern, r in _MATCHERS if (m := pattern.match(path))]
        if not matched:
            return error(404, "not_found", f"no route for {method} {path}; see /openapi.json")
        chosen = next(((args, route) for args, route in matched if route.method == method), None)
        if chosen is None:
            allowed = ", ".join(r.method for _, r in matched)
            resp = error(405, "method_not_allowed", f"{method} is not allowed on {path}; use {allowed}")
            resp.headers["allow"] = allowed
            return resp
        args, route = chosen
        caller = None
        if route.auth and (caller := self.keys.caller(req.headers.get("authorization"))) is None:
            return self._unauthorized()
        handler: Callable[..., ApiResponse] = getattr(self, route.handler)
        return handler(req, caller, **args)

    def _unauthorized(self) -> ApiResponse:
        if not self.keys.by_hash:
            return error(
                401,
                "unauthorized",
                "no API keys are configured; give the service a key's hash "
                "(`alto config hash-key KEY`) in ALTO_API_KEY_HASHES=tenant=sha256:... or under "
                "tenants.<name>.api_keys (locally, ALTO_API_KEYS=tenant=key also works)",
            )
        return error(401, "unauthorized", "missing or invalid API key; send 'Authorization: Bearer <key>'")

    # ------------------------------------------------------------------ handlers (named in ROUTES)

    def health(self, req: ApiRequest, caller: None) -> ApiResponse:
        return ApiResponse(200, {"status": "ok"})

    def openapi(self, req: ApiRequest, caller: None) -> ApiResponse:
        from core.entrypoints.openapi import openapi_spec

        workflows = self.service.settings.workflows
        return ApiResponse(200, openapi_spec(tuple(sorted((k, w.input) for k, w in workflows.items()))))

    def submit(self, req: ApiRequest, caller: Caller) -> ApiResponse:
        if caller.tenant is None:
            raise Forbidden("an operator's key reads and acts on jobs but submits none: submit with a tenant's key")
        request = job_request(req)
        if isinstance(request, ApiResponse):
            return request
        trace_id, parent_span = trace_from(req.headers.get("traceparent"))
        job, created = self.service.submit(
            caller.tenant,
            request,
            idempotency_key=req.headers.get("idempotency-key"),
            trace_id=trace_id,
            parent_span_id=parent_span,
        )
        base = self.public_url or req.base_url.rstrip("/")
        status_url = f"{base}/v1/jobs/{job.id}"
        body = SubmitResponse(job_id=job.id, status=job.status, status_url=status_url).model_dump(mode="json")
        headers = {"location": status_url, "x-trace-id": job.trace_id}
        if not created:
            headers["idempotent-replayed"] = "true"
        return ApiResponse(202, body, headers)

    def list_jobs(self, req: ApiRequest, caller: Caller) -> ApiResponse:
        q = reads.listing(req.query, caller)
        page = (
            self.service.children_page(
                caller.tenant, q.parent, status=q.status, limit=q.limit, cursor=q.cursor, where=q.where
            )
            if q.parent is not None
            else self.service.page(q.tenant, status=q.status, limit=q.limit, cursor=q.cursor, where=q.where)
        )
        return ApiResponse(
            200,
            JobList(jobs=[self.service.queries.view_of(j) for j in page.jobs], next_cursor=page.next_cursor).model_dump(
                mode="json"
            ),
        )

    def get_job(self, req: ApiRequest, caller: Caller, job_id: str) -> ApiResponse:
        tenant = caller.tenant
        if "wait_s" not in req.query and "after" not in req.query:
            return ApiResponse(200, self.service.view(tenant, job_id).model_dump(mode="json"))
        wait = wait_s(req.query.get("wait_s", "0"))
        if isinstance(wait, ApiResponse):
            return wait
        if req.query.get("after", "0") == "":
            return error(422, "invalid_request", "after is empty: give ATTEMPT:SEQ (the partial's) or SEQ", "after")
        try:
            frames = self.service.feed.long_poll(self.service.get(tenant, job_id), req.query.get("after", "0"), wait)
        except ValueError as e:
            return error(422, "invalid_request", str(e), "after")
        return ApiResponse(200, None, frames=frames)

    def job_events(self, req: ApiRequest, caller: Caller, job_id: str) -> ApiResponse:
        tenant = caller.tenant
        last = req.headers.get("last-event-id") or req.query.get("last_event_id")
        wait = wait_s(req.query.get("wait_s", str(self.service.settings.stream.max_wait_s)))
        if isinstance(wait, ApiResponse):
            return wait
        try:
            frames = self.service.feed.sse(self.service.get(tenant, job_id), last, follow=req.streaming, wait_s=wait)
        except ValueError as e:
            return error(422, "invalid_request", str(e), "Last-Event-ID")
        return ApiResponse(
            200,
            None,
            {"cache-control": "no-cache", "x-accel-buffering": "no"},
            frames=frames,
            media_type="text/event-stream",
        )

    def usage(self, req: ApiRequest, caller: Caller) -> ApiResponse:
        since, by = reads.report_days(req.query), reads.group_by(req.query, DIMENSIONS, caller)
        rows = self.service.spend.report(self._tenants(req, caller), since=since, by=by)
        report = UsageReport.model_validate({"since": day_of(since), "group_by": by, "rows": rows})
        return ApiResponse(200, report.model_dump(mode="json"))

    def outcomes(self, req: ApiRequest, caller: Caller) -> ApiResponse:
        from core.governance.outcomes import DIMENSIONS as OUTCOME_DIMENSIONS

        since, by = reads.report_days(req.query), reads.group_by(req.query, OUTCOME_DIMENSIONS, caller)
        rows = self.service.outcomes.report(self._tenants(req, caller), since=since, by=by)
        report = OutcomeReport.model_validate({"since": day_of(since), "group_by": by, "rows": rows})
        return ApiResponse(200, report.model_dump(mode="json"))

    def _tenants(self, req: ApiRequest, caller: Caller) -> list[str]:
        one = reads.scope(req.query, caller)
        return [one] if one is not None else self.keys.tenants

    def me(self, req: ApiRequest, caller: Caller) -> ApiResponse:
        return ApiResponse(
            200,
            Me(
                tenant=caller.tenant,
                operator=caller.operator,
                tenants=self.keys.tenants if caller.tenant is None else [caller.tenant],
            ).model_dump(),
        )

    def cancel_job(self, req: ApiRequest, caller: Caller, job_id: str) -> ApiResponse:
        return ApiResponse(
            200, self.service.queries.view_of(self.service.cancel(caller.tenant, job_id)).model_dump(mode="json")
        )

    def get_thread(self, req: ApiRequest, caller: Caller, thread_id: str) -> ApiResponse:
        return ApiResponse(200, self.service.thread(caller.tenant, thread_id).model_dump(mode="json"))

    def erase_thread(self, req: ApiRequest, caller: Caller, thread_id: str) -> ApiResponse:
        return ApiResponse(200, self.service.erase_thread(caller.tenant, thread_id).model_dump(mode="json"))

    def replay_job(self, req: ApiRequest, caller: Caller, job_id: str) -> ApiResponse:
        return ApiResponse(
            200, self.service.queries.view_of(self.service.replay_for(caller.tenant, job_id)).model_dump(mode="json")
        )

    def providers(self, req: ApiRequest, caller: Caller) -> ApiResponse:
        state = getattr(self.service, "provider_state", None)
        if state is None:
            return error(
                501,
                "not_available",
                "this api function loads no model catalog; read the circuits where "
                "workers run (alto serve, or the worker's logs)",
                "(path)",
            )
        return ApiResponse(200, {"models": state()})


def respond(api: Api, req: ApiRequest) -> ApiResponse:
    """What every runtime's HTTP entry point calls: the body limit (the one check, for every route), then the
    routes."""
    if len(req.body) > MAX_BODY_BYTES:
        return error(
            413,
            "payload_too_large",
            f"request body exceeds {MAX_BODY_BYTES} bytes; put large documents "
            "in a collection with `alto ingest` and reference it by `collection`, or in the blob store and "
            'pass a workflow `inputs: {NAME: "blob:KEY"}`',
            "(body)",
        )
    return api.handle(req)


def build_api(app: Any) -> Api:
    """Wire the API from a bootstrapped App (keeps the adapters one line)."""
    return Api(app.service, ApiKeys(app.settings, app.secrets), public_url=app.settings.server.public_url)


_apis: weakref.WeakKeyDictionary[Any, Api] = weakref.WeakKeyDictionary()


def api_for(app: Any) -> Api:
    """The HTTP API over a bootstrapped app, built once per app (its API keys resolved once): what every
    runtime's HTTP entry serves. The entry point asks for it; the composition root knows nothing of HTTP."""
    try:
        return _apis[app]
    except KeyError:
        made = _apis[app] = build_api(app)
        return made
