"""What a request's body, query and headers parse into, or the response that says what is wrong with them."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from pydantic import ValidationError

from core.entrypoints.messages import ApiRequest, ApiResponse, error
from core.models import JobRequest


def wait_s(raw: str) -> float | ApiResponse:
    try:
        wait = float(raw)
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= 900:
        return error(
            422,
            "invalid_request",
            "wait_s must be a number of seconds from 0 to 900 (answers come sooner: at most stream.max_wait_s)",
            "wait_s",
        )
    return wait


def job_request(req: ApiRequest) -> JobRequest | ApiResponse:
    """The body as a JobRequest, or the response that says what is wrong with it."""
    ctype = req.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if ctype not in ("application/json", ""):
        return error(
            415,
            "unsupported_media_type",
            f"content-type {ctype!r} is not supported; send application/json",
            "Content-Type",
        )
    try:
        data = json.loads(req.body or b"null", parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        return error(400, "invalid_json", "request body is nested too deeply to be a job request", "(body)")
    except (ValueError, UnicodeDecodeError) as e:
        return error(400, "invalid_json", f"request body is not valid JSON: {e}", "(body)")
    if not isinstance(data, dict):
        return error(422, "invalid_request", 'request body must be a JSON object like {"prompt": "..."}', "(body)")
    try:
        return JobRequest.model_validate(data)
    except ValidationError as e:
        errors = [
            {
                "field": ".".join(str(p) for p in err["loc"]) or "(body)",
                "message": err["msg"].removeprefix("Value error, "),
            }
            for err in e.errors()
        ]
        first = errors[0]
        return error(422, "invalid_request", f"{first['field']}: {first['message']}", first["field"], errors=errors)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (RFC 8259); send a finite number or a string")


def _finite(text: str) -> float:
    """A JSON number as a float, refused when it overflows to infinity (1e999 would be stored as null)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is too large to represent; send a finite number or a string")
    return value


def trace_from(traceparent: str | None) -> tuple[str | None, str | None]:
    """Continue a W3C trace when the caller sends one: (trace id, the caller's span id)."""
    if traceparent:
        parts = traceparent.split("-")
        if len(parts) == 4 and re.fullmatch(r"[0-9a-f]{32}", parts[1]) and parts[1] != "0" * 32:
            span = parts[2] if re.fullmatch(r"[0-9a-f]{16}", parts[2]) and parts[2] != "0" * 16 else None
            return parts[1], span
    return None, None
