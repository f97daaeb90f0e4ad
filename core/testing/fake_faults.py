"""The fake Anthropic server's faults: what each drawn outcome answers (an error status, or a 200 that is not a
usable reply), as the Messages API would send it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


Fault = tuple[int, Any, "dict[str, str] | None", "bytes | None"]  # status, body, extra headers, raw body

# a 200 that is not a usable reply: outcome → the answer made wrong
BAD_REPLIES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "empty": lambda a: {**a, "content": []},
    "max_tokens": lambda a: {
        **a,
        "stop_reason": "max_tokens",
        "content": [{"type": "text", "text": a["content"][0]["text"][:12]}],
    },
    "no_usage": lambda a: {k: v for k, v in a.items() if k != "usage"},
    "absurd_usage": lambda a: {**a, "usage": {"input_tokens": 10**12, "output_tokens": 10**12}},
    "negative_usage": lambda a: {**a, "usage": {"input_tokens": -500, "output_tokens": -20}},
}

# outcome → (status, body, extra headers, raw body) for every drawn fault that answers at once
FAULT_REPLIES: dict[str, Callable[[Any, str], Fault]] = {
    "429": lambda plan, model: (
        429,
        _error("rate_limit_error", "rate limited"),
        {"retry-after": str(plan.retry_after_s)},
        None,
    ),
    "429_no_retry_after": lambda plan, model: (429, _error("rate_limit_error", "rate limited"), None, None),
    "529": lambda plan, model: (529, _error("overloaded_error", "overloaded"), None, None),
    "500": lambda plan, model: (500, _error("api_error", "internal error"), None, None),
    "400": lambda plan, model: (400, _error("invalid_request_error", "prompt is not acceptable"), None, None),
    "400_context": lambda plan, model: (
        400,
        _error("invalid_request_error", "prompt is too long: 250000 tokens > 200000 maximum"),
        None,
        None,
    ),
    "refusal": lambda plan, model: (
        200,
        {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": "refusal",
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 0},
        },
        None,
        None,
    ),
    "malformed": lambda plan, model: (200, None, None, b'{"id": "msg_x", "type": "message", "content": ['),
}
