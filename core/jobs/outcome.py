"""`Outcome`: what processing one delivery asks of its queue (ack, retry after a delay, or defer)."""

from __future__ import annotations

from typing import Literal, NamedTuple

from core.models import JobStatus


# NamedTuples rather than dataclasses on the paths every cold start loads: generating a dataclass
# costs ~0.4 ms at import.
class Outcome(NamedTuple):
    """What the runtime should do with the delivery.

    `ack` deletes it; `retry` hands it back after `delay_s` (counts as a delivery, so a message that
    keeps failing reaches the DLQ); `defer` sends a fresh copy delayed by `delay_s` and deletes this
    one, so waiting for a rate limit or an open circuit never uses up the queue's receive count.
    """

    action: Literal["ack", "retry", "defer"]
    delay_s: float = 0.0
    status: JobStatus | None = None
    detail: str = ""


def raced(detail: str = "job changed under us", delay_s: float = 1.0) -> Outcome:
    """A compare-and-set lost to another delivery: come back shortly and look again."""
    return Outcome("retry", delay_s=delay_s, detail=detail)
