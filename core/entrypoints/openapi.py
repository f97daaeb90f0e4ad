"""The OpenAPI 3.1 document, generated from the route table (`core.entrypoints.routes.ROUTES`) and the
same pydantic models that validate requests and shape responses, so the spec cannot drift from them."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import models_json_schema

from core import __version__
from core.entrypoints.routes import ROUTES, Route
from core.models import JobRequest


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")  # e.g. `errors` (every invalid field) or `job_id`

    code: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    """Every 4xx/5xx body (`core.entrypoints.http.error` builds exactly this)."""

    error: ErrorDetail


SSE_EVENT = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"enum": ["delta", "reset", "status", "done"]},
        "id": {"type": "string", "description": "ATTEMPT:SEQ, on deltas: send it back as Last-Event-ID"},
        "data": {"type": "string", "description": "JSON: {text, attempt, seq} | {attempt} | {status} | the job view"},
        "retry": {"type": "integer"},
    },
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _operation(route: Route) -> dict[str, Any]:
    err = {"content": {"application/json": {"schema": _ref("ErrorResponse")}}}
    ok: dict[str, Any] = {"description": route.summary}
    if route.response is not None:
        ok["content"] = {"application/json": {"schema": _ref(route.response.__name__)}}
    elif route.media_type == "text/event-stream":  # each event, as OpenAPI 3.1 tools check them
        ok["content"] = {route.media_type: {"schema": SSE_EVENT}}
    if route.status == 202:
        ok["headers"] = {"Location": {"schema": {"type": "string"}}}
        ok["links"] = {
            r.handler: {"operationId": r.handler, "parameters": {"job_id": "$response.body#/job_id"}}
            for r in ROUTES
            if "{job_id}" in r.path
        }
    op: dict[str, Any] = {
        "summary": route.summary,
        "operationId": route.handler,
        "responses": {str(route.status): ok, **{str(s): {"description": d, **err} for s, d in route.errors.items()}},
    }
    if route.params:
        op["parameters"] = [
            {"name": p.name, "in": p.where, "required": p.where == "path", "schema": dict(p.schema)}
            for p in route.params
        ]
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(route.body.__name__)}}}
    if not route.auth:
        op["security"] = []
    return op


def _workflow_fields(request: dict[str, Any], workflows: tuple[tuple[str, str], ...]) -> None:
    """The configured workflows as the `workflow` enum, and for each one the input it takes (if/then)."""
    names = sorted({w for w, _ in workflows} | {w.split("@")[0] for w, _ in workflows})
    request["properties"]["workflow"]["anyOf"] = [{"type": "string", "enum": names}, {"type": "null"}]
    text = {"type": "string", "minLength": 1, "pattern": "\\S"}
    request["allOf"] = [
        {
            "if": {"required": ["workflow"], "properties": {"workflow": {"enum": [w, w.split("@")[0]]}}},
            "then": {
                "properties": {
                    "inputs": {
                        "type": "object",
                        "required": [name],
                        "properties": {name: text},
                        "additionalProperties": False,
                    }
                }
            },
        }
        for w, name in workflows
    ]


@lru_cache(maxsize=4)
def openapi_spec(workflows: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    """The document; `workflows` (each configured `name@version` and its input) shape the `workflow` field."""
    models = {m for r in ROUTES for m in (r.body, r.response) if m is not None} | {ErrorResponse}
    _, defs = models_json_schema(
        [(m, "validation" if m is JobRequest else "serialization") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    if workflows:
        _workflow_fields(defs["$defs"]["JobRequest"], workflows)
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Altostratus",
            "version": __version__,
            "description": "Asynchronous, governed LLM jobs. Submit, then poll the status URL.",
        },
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }
