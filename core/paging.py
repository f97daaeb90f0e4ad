"""Cursor pagination for job listings: a page ends at a position, and the next page starts strictly after it.

A listing is ordered newest first by (created_at, id), both descending. A position is the last job a page
returned; the next page holds only jobs strictly older than it, so jobs created meanwhile (always newer)
never shift a page and no job is returned twice or skipped. A workflow's children have a fixed order (their
ids are deterministic and new rounds only append), so their cursor is an offset into that order.
Cursors are opaque to clients: url-safe base64 of a small JSON object, checked when read back.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import NamedTuple

from core.errors import InputError


class Position(NamedTuple):
    """Where a newest-first listing stopped: the last job returned."""

    created_at: float
    id: str

    def after(self, created_at: float, job_id: str) -> bool:
        """Whether a job at (created_at, job_id) comes strictly after this position (is older)."""
        return (created_at, job_id) < (self.created_at, self.id)


def _encode(obj: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode(cursor: str) -> dict[str, object]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        obj = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        obj = None
    if not isinstance(obj, dict):
        raise InputError(
            "cursor is not one this API gave out: pass next_cursor from the previous page as it is", field="cursor"
        )
    return obj


def position_cursor(p: Position) -> str:
    return _encode({"t": p.created_at, "i": p.id})


def read_position(cursor: str) -> Position:
    obj = _decode(cursor)
    t, i = obj.get("t"), obj.get("i")
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t) or not isinstance(i, str):
        raise InputError("cursor is not a job listing's: pass next_cursor from the same listing", field="cursor")
    return Position(float(t), i)


def offset_cursor(n: int) -> str:
    return _encode({"o": n})


def read_offset(cursor: str) -> int:
    n = _decode(cursor).get("o")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise InputError(
            "cursor is not a workflow's children listing's: pass next_cursor from the same listing", field="cursor"
        )
    return n
