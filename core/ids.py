"""Identifiers: job ids are unguessable (128 random bits), trace ids follow the W3C trace-id shape."""

from __future__ import annotations

import secrets
import time


def new_job_id(*, ordered: bool = False) -> str:
    """`ordered`: the creation time in milliseconds (11 hex digits) before the random part, so ids sort
    by age (for a B-tree store, `core.ports.OrderedKeys`); still 128 random bits after it."""
    if ordered:
        return f"job_{time.time_ns() // 1_000_000:011x}{secrets.token_hex(16)}"
    return "job_" + secrets.token_hex(16)


def new_trace_id() -> str:
    return secrets.token_hex(16)
