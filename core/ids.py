"""Identifiers: job ids are unguessable (128 random bits), trace ids follow the W3C trace-id shape."""

from __future__ import annotations

import secrets
import time


def ms_hex(now_s: float) -> str:
    """A time in milliseconds as 11 hex digits (until the year 2527): the prefix of ids that sort by age."""
    return f"{int(now_s * 1000):011x}"


def new_job_id(*, ordered: bool = False) -> str:
    """`ordered`: the creation time in milliseconds (11 hex digits) before the random part, so ids sort
    by age (for a B-tree store, `core.ports.OrderedKeys`); still 128 random bits after it."""
    if ordered:
        return f"job_{ms_hex(time.time())}{secrets.token_hex(16)}"
    return "job_" + secrets.token_hex(16)


def new_trace_id() -> str:
    return secrets.token_hex(16)
