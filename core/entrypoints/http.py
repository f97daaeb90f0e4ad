"""The HTTP API as a plain function of (method, path, headers, body), so the local server and every
cloud handler (API Gateway, Cloud Functions, Azure Functions) serve identical routes, auth and errors.
"""

from __future__ import annotations

import hashlib
import json
import re
from types import MappingProxyType
from typing import Any, Mapping, NamedTuple

from pydantic import ValidationError

from core.config import KEY_HASH, ApiSettings
from core.errors import ConfigError, IdempotencyConflict, InputError, NotFound, QueueUnavailable
from core.logs import log_event
from core.models import JobRequest, JobStatus, JobView, SubmitResponse
from core.ports import Secrets
from core.service import JobService

MAX_BODY_BYTES = 2 * 1024 * 1024
JOB_PATH = re.compile(r"^/v1/jobs/([A-Za-z0-9_-]{1,128})$")


class ApiRequest(NamedTuple):  # not a dataclass: see core.service.Prepared
    method: str
    path: str
    headers: Mapping[str, str]  # keys lower-cased by the adapter
    body: bytes = b""
    base_url: str = ""
    query: Mapping[str, str] = MappingProxyType({})


class ApiResponse:
    __slots__ = ("status", "body", "headers")

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = {} if headers is None else headers

    def __repr__(self) -> str:
        return f"ApiResponse({self.status}, {self.body!r}, {self.headers!r})"

    def json_bytes(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":")).encode()


def _error(status: int, code: str, message: str, field_name: str | None = None, **extra: Any) -> ApiResponse:
    err: dict[str, Any] = {"code": code, "message": message}
    if field_name:
        err["field"] = field_name
    err.update(extra)
    headers = {"www-authenticate": 'Bearer realm="altostratus"'} if status == 401 else {}
    return ApiResponse(status, {"error": err}, headers)


class ApiKeys:
    """Tenant lookup by SHA-256 of the bearer key: raw keys are never stored or logged."""

    def __init__(self, settings: ApiSettings, secrets: Secrets) -> None:
        self.by_hash: dict[str, str] = {}
        for tenant, cfg in settings.tenants.items():
            for entry in cfg.api_keys:
                digest = entry if KEY_HASH.match(entry) else "sha256:" + _sha(secrets.resolve(entry))
                self.by_hash[digest] = tenant

    def tenant_for(self, authorization: str | None) -> str | None:
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self.by_hash.get("sha256:" + _sha(token.strip()))


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class Api:
    def __init__(self, service: JobService, keys: ApiKeys, *, public_url: str | None = None) -> None:
        self.service = service
        self.keys = keys
        self.public_url = public_url.rstrip("/") if public_url else None

    def handle(self, req: ApiRequest) -> ApiResponse:
        try:
            return self._route(req)
        except ConfigError as e:
            log_event("api.config_error", error=str(e))
            return _error(500, "config_error", str(e))
        except Exception as e:  # the client gets an id-free generic error; the log has the details
            import logging

            log_event("api.unhandled", logging.ERROR, error=repr(e)[:500], path=req.path)
            return _error(500, "internal_error", "internal error; the request may be retried safely with an Idempotency-Key")

    def _route(self, req: ApiRequest) -> ApiResponse:
        method, path = req.method.upper(), req.path.rstrip("/") or "/"
        if path == "/healthz":
            return ApiResponse(200, {"status": "ok"})
        if path == "/openapi.json" and method == "GET":
            return ApiResponse(200, openapi_spec())
        if path == "/v1/jobs" or JOB_PATH.match(path):
            tenant = self.keys.tenant_for(req.headers.get("authorization"))
            if tenant is None:
                if not self.keys.by_hash:
                    return _error(401, "unauthorized", "no API keys are configured; set ALTO_API_KEYS=tenant=key "
                                  "or add hashed keys under tenants.<name>.api_keys")
                return _error(401, "unauthorized", "missing or invalid API key; send 'Authorization: Bearer <key>'")
            if path == "/v1/jobs":
                if method == "POST":
                    return self._submit(tenant, req)
                if method == "GET":
                    return self._list(tenant, req)
                return _error(405, "method_not_allowed", f"{method} is not allowed on {path}; use POST or GET")
            m = JOB_PATH.match(path)
            assert m
            if method != "GET":
                return _error(405, "method_not_allowed", f"{method} is not allowed on {path}; use GET")
            try:
                view = self.service.view(tenant, m.group(1))
            except NotFound as e:
                return _error(404, "not_found", str(e))
            return ApiResponse(200, view.model_dump(mode="json"))
        return _error(404, "not_found", f"no route for {method} {path}; see /openapi.json")

    def _submit(self, tenant: str, req: ApiRequest) -> ApiResponse:
        ctype = req.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if ctype not in ("application/json", ""):
            return _error(415, "unsupported_media_type", f"content-type {ctype!r} is not supported; send application/json")
        if len(req.body) > MAX_BODY_BYTES:
            return _error(413, "payload_too_large", f"request body exceeds {MAX_BODY_BYTES} bytes; put large documents "
                          "in a collection with `alto ingest` and reference it by `collection`")
        try:
            data = json.loads(req.body or b"null")
        except (ValueError, UnicodeDecodeError) as e:
            return _error(400, "invalid_json", f"request body is not valid JSON: {e}")
        if not isinstance(data, dict):
            return _error(422, "invalid_request", "request body must be a JSON object like {\"prompt\": \"...\"}")
        try:
            request = JobRequest.model_validate(data)
        except ValidationError as e:
            errors = [
                {"field": ".".join(str(p) for p in err["loc"]) or "(body)",
                 "message": err["msg"].removeprefix("Value error, ")}
                for err in e.errors()
            ]
            first = errors[0]
            return _error(422, "invalid_request", f"{first['field']}: {first['message']}", first["field"], errors=errors)
        try:
            job, created = self.service.submit(
                tenant, request, idempotency_key=req.headers.get("idempotency-key"),
                trace_id=_trace_from(req.headers.get("traceparent")),
            )
        except IdempotencyConflict as e:
            return _error(422, "idempotency_key_reused", str(e), "Idempotency-Key")
        except InputError as e:
            return _error(e.status, "invalid_request", str(e), e.field)
        except QueueUnavailable as e:
            resp = _error(503, "queue_unavailable", str(e), job_id=e.job_id)
            resp.headers["retry-after"] = "5"
            return resp
        base = self.public_url or req.base_url.rstrip("/")
        status_url = f"{base}/v1/jobs/{job.id}"
        body = SubmitResponse(job_id=job.id, status=job.status, status_url=status_url).model_dump(mode="json")
        headers = {"location": status_url, "x-trace-id": job.trace_id}
        if not created:
            headers["idempotent-replayed"] = "true"
        return ApiResponse(202, body, headers)

    def _list(self, tenant: str, req: ApiRequest) -> ApiResponse:
        status = req.query.get("status")
        try:
            st = JobStatus(status) if status else None
            limit = min(200, max(1, int(req.query.get("limit", "50"))))
        except ValueError:
            return _error(422, "invalid_request", "status must be a job status and limit an integer 1-200", "status")
        jobs = self.service.store.list(tenant=tenant, status=st, limit=limit)
        return ApiResponse(200, {"jobs": [JobView.of(j).model_dump(mode="json") for j in jobs]})


def _trace_from(traceparent: str | None) -> str | None:
    """Continue a W3C trace when the caller sends one."""
    if traceparent:
        parts = traceparent.split("-")
        if len(parts) == 4 and re.fullmatch(r"[0-9a-f]{32}", parts[1]) and parts[1] != "0" * 32:
            return parts[1]
    return None


def respond(api: Api, req: ApiRequest) -> ApiResponse:
    """What every runtime's HTTP entry point calls: the body limit, then the routes."""
    if len(req.body) > MAX_BODY_BYTES:
        return _error(413, "payload_too_large", f"request body exceeds {MAX_BODY_BYTES} bytes")
    return api.handle(req)


def build_api(app: Any) -> Api:
    """Wire the API from a bootstrapped App (keeps the adapters one line)."""
    return Api(app.service, ApiKeys(app.settings, app.secrets), public_url=app.settings.server.public_url)


_SPEC: dict[str, Any] | None = None


def openapi_spec() -> dict[str, Any]:
    global _SPEC
    if _SPEC is None:
        from pydantic.json_schema import models_json_schema

        from core import __version__

        _, defs = models_json_schema(
            [(m, "serialization" if m is not JobRequest else "validation") for m in (JobRequest, SubmitResponse, JobView)],
            ref_template="#/components/schemas/{model}",
        )
        schemas = defs.get("$defs", {})
        schemas["Error"] = {
            "type": "object",
            "properties": {"error": {"type": "object", "properties": {
                "code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}}}},
        }
        ref = lambda name: {"$ref": f"#/components/schemas/{name}"}  # noqa: E731
        err = {"content": {"application/json": {"schema": ref("Error")}}}
        _SPEC = {
            "openapi": "3.1.0",
            "info": {"title": "Altostratus", "version": __version__,
                     "description": "Asynchronous, governed LLM jobs. Submit, then poll the status URL."},
            "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
            "security": [{"bearer": []}],
            "paths": {
                "/v1/jobs": {
                    "post": {
                        "summary": "Submit a job",
                        "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                                        "schema": {"type": "string", "maxLength": 255}}],
                        "requestBody": {"required": True, "content": {"application/json": {"schema": ref("JobRequest")}}},
                        "responses": {
                            "202": {"description": "Accepted", "headers": {"Location": {"schema": {"type": "string"}}},
                                    "content": {"application/json": {"schema": ref("SubmitResponse")}}},
                            "400": {"description": "Malformed JSON", **err},
                            "401": {"description": "Missing or invalid API key", **err},
                            "413": {"description": "Body too large", **err},
                            "415": {"description": "Not JSON", **err},
                            "422": {"description": "Invalid field, or Idempotency-Key reused with another body", **err},
                        },
                    },
                    "get": {
                        "summary": "List this tenant's jobs",
                        "parameters": [{"name": "status", "in": "query", "schema": {"type": "string"}},
                                       {"name": "limit", "in": "query", "schema": {"type": "integer"}}],
                        "responses": {"200": {"description": "Jobs"}, "401": {"description": "Unauthorized", **err}},
                    },
                },
                "/v1/jobs/{job_id}": {
                    "get": {
                        "summary": "Get a job",
                        "parameters": [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                        "responses": {
                            "200": {"description": "The job", "content": {"application/json": {"schema": ref("JobView")}}},
                            "401": {"description": "Unauthorized", **err},
                            "404": {"description": "Not found (or another tenant's)", **err},
                        },
                    }
                },
                "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "ok"}}}},
            },
        }
    return _SPEC
