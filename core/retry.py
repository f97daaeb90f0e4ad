"""Backoff with full jitter, and how long a retry may wait given the invocation's remaining time."""

from __future__ import annotations

import random


def full_jitter(attempt: int, *, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """AWS-style full jitter: uniform in [0, min(cap, base * 2**(attempt-1))]."""
    r = rng or random
    return r.uniform(0.0, min(cap_s, base_s * (2 ** max(0, attempt - 1))))


def retry_delay(
    attempt: int,
    *,
    retry_after_s: float | None,
    base_s: float,
    cap_s: float,
    retry_after_cap_s: float,
    rng: random.Random | None = None,
) -> float:
    """A provider's retry-after wins (capped by config); otherwise full-jitter backoff."""
    if retry_after_s is not None:
        return min(retry_after_s, retry_after_cap_s)
    return full_jitter(attempt, base_s=base_s, cap_s=cap_s, rng=rng)


def jittered(delay_s: float, rng: random.Random | None = None) -> float:
    """Spread deferred jobs so they don't all return on the same tick."""
    return delay_s + (rng or random).uniform(0.0, max(0.05, delay_s * 0.2))
