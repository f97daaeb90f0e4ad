"""Identifiers: job ids are unguessable (128 random bits), trace ids follow the W3C trace-id shape."""

from __future__ import annotations

import os
import time

_BATCH = 128  # ids per read of the OS's random source: one getrandom call instead of one per id
_pool: list[str] = []
# a forked child must never hand out the ids its parent's pool holds too
os.register_at_fork(after_in_child=_pool.clear)


def random_hex() -> str:
    """128 bits from the OS's CSPRNG (as `secrets.token_hex(16)`), as 32 hex digits, read in batches.
    `list.pop` is atomic, so threads sharing the pool never get the same bits."""
    while True:
        try:
            return _pool.pop()
        except IndexError:  # empty: refill (two threads refilling at once only read the source twice)
            raw = os.urandom(16 * _BATCH).hex()
            _pool.extend([raw[i : i + 32] for i in range(0, len(raw), 32)])


def ms_hex(now_s: float) -> str:
    """A time in milliseconds as 11 hex digits (until the year 2527): the prefix of ids that sort by age."""
    return f"{int(now_s * 1000):011x}"


def new_job_id(*, ordered: bool = False) -> str:
    """`ordered`: the creation time in milliseconds (11 hex digits) before the random part, so ids sort
    by age (for a B-tree store, a store that declares `ordered_ids`, see `core.ports.JobStore`); still 128 random bits after it."""
    if ordered:
        return f"job_{ms_hex(time.time())}{random_hex()}"
    return "job_" + random_hex()


def new_trace_id() -> str:
    return random_hex()
