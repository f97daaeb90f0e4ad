"""Identifiers: job ids are unguessable (128 random bits), trace ids follow the W3C trace-id shape."""

from __future__ import annotations

import secrets


def new_job_id() -> str:
    return "job_" + secrets.token_hex(16)


def new_trace_id() -> str:
    return secrets.token_hex(16)
