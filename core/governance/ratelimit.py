"""Token-bucket rate limits and a concurrency cap per model deployment, shared through the StateStore.

Buckets work by reservation (as Guava's RateLimiter and GCRA do): a caller takes its tokens now,
possibly into debt, and is told how long to wait before calling, so concurrent workers get
distinct slots instead of stampeding on every refill. A wait longer than the caller may spend in
process is not reserved at all: the job is deferred to the queue, which is neither an attempt
nor a failure. Output tokens are only known after the reply, so they are charged then (debt the
next callers wait for), with the input estimate corrected to the provider's count.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.config.models import LimitsConfig, ModelConfig
from core.governance.state import mutate
from core.ports import StateRecord, StateStore

BUCKET_TTL_S = 3600.0


@dataclass
class Reservation:
    """Tokens taken for one call. `wait_s` is how long to sleep before calling."""

    key: str
    wait_s: float
    charged: dict[str, float] = field(default_factory=dict)


@dataclass
class Deferral:
    """No capacity within the caller's patience: come back after `delay_s`."""

    delay_s: float
    reason: str


def deployment_key(model: ModelConfig) -> str:
    return f"{model.provider}:{model.model_id}"


class RateLimiter:
    def __init__(self, state: StateStore, *, clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.clock = clock

    # -------------------------------------------------------------- token buckets

    def status(self, model: ModelConfig) -> dict[str, Any]:
        """The shared buckets' levels now (refilled to this moment) and the slots in use, for operators."""
        limits = model.limits
        rates = limits.rates_per_s() if limits is not None else {}
        out: dict[str, Any] = {"limits": limits.model_dump(exclude_none=True) if limits is not None else {}}
        if rates and limits is not None:
            rec = self.state.get("rl:" + deployment_key(model))
            levels = _refill(rec, limits, _now(rec, self.clock))
            out["available"] = {name: round(levels[name], 3) for name in rates}
            out["capacity"] = {name: round(rate * limits.burst_s, 3) for name, rate in rates.items()}
        slots = self.state.get("cc:" + deployment_key(model))
        now = self.clock()
        out["slots_in_use"] = sum(1 for exp in (slots.value.get("holders", {}) if slots else {}).values() if exp > now)
        return out

    @staticmethod
    def rated(model: ModelConfig) -> bool:
        """Whether `model` has token-bucket rates: without, `reserve` and `correct` touch no state."""
        return model.limits is not None and bool(model.limits.rates_per_s())

    @staticmethod
    def capped(model: ModelConfig) -> bool:
        """Whether `model` has a concurrency cap: without, slots are "unlimited" and touch no state."""
        return model.limits is not None and model.limits.max_concurrency is not None

    def reserve(self, model: ModelConfig, *, input_tokens: int, max_wait_s: float) -> Reservation | Deferral:
        limits = model.limits
        key = "rl:" + deployment_key(model)
        if limits is None or not limits.rates_per_s():
            return Reservation(key=key, wait_s=0.0)
        rates = limits.rates_per_s()
        costs = {"requests": 1.0, "input_tokens": float(input_tokens), "tokens": float(input_tokens)}
        costs = {k: costs.get(k, 0.0) for k in rates}

        def change(rec: StateRecord | None) -> tuple[dict[str, Any] | None, Reservation | Deferral]:
            now = _now(rec, self.clock)
            levels = _refill(rec, limits, now)
            wait = 0.0
            for name, rate in rates.items():
                need = min(costs[name], rate * limits.burst_s)  # a request bigger than the bucket waits for a full one
                wait = max(wait, (need - levels[name]) / rate)
            if wait > max_wait_s:
                return None, Deferral(delay_s=wait, reason=f"rate limit on {deployment_key(model)}")
            for name in rates:
                levels[name] -= costs[name]
            return {"levels": levels, "ts": now}, Reservation(key=key, wait_s=max(0.0, wait), charged=costs)

        return mutate(self.state, key, change, ttl_s=BUCKET_TTL_S)

    def correct(self, model: ModelConfig, reservation: Reservation, *, input_tokens: int, output_tokens: int) -> None:
        """Charge what the reply really used: output tokens, and the input estimate's error either way."""
        limits = model.limits
        if limits is None:
            return
        rates = limits.rates_per_s()
        est_in = reservation.charged.get("input_tokens", reservation.charged.get("tokens", 0.0))
        delta = {
            "input_tokens": input_tokens - est_in,
            "output_tokens": float(output_tokens),
            "tokens": input_tokens - est_in + output_tokens,
        }
        delta = {k: v for k, v in delta.items() if k in rates and v != 0}
        if not delta:
            return

        def change(rec: StateRecord | None) -> tuple[dict[str, Any] | None, None]:
            now = _now(rec, self.clock)
            levels = _refill(rec, limits, now)
            for name, d in delta.items():
                levels[name] = min(levels[name] - d, rates[name] * limits.burst_s)
            return {"levels": levels, "ts": now}, None

        mutate(self.state, reservation.key, change, ttl_s=BUCKET_TTL_S)

    # -------------------------------------------------------------- concurrency cap

    def acquire_slot(self, model: ModelConfig, *, hold_s: float) -> str | None:
        """A slot token if fewer than `max_concurrency` calls are in flight, else None.

        Slots expire after `hold_s` (the job's lease) so a crashed worker never leaks one.
        """
        limits = model.limits
        if limits is None or limits.max_concurrency is None:
            return "unlimited"
        cap = limits.max_concurrency
        key = "cc:" + deployment_key(model)
        token = uuid.uuid4().hex
        now = self.clock()

        def change(rec: StateRecord | None) -> tuple[dict[str, Any] | None, str | None]:
            holders = {t: exp for t, exp in (rec.value.get("holders", {}) if rec else {}).items() if exp > now}
            if len(holders) >= cap:
                return None, None
            holders[token] = now + hold_s
            return {"holders": holders}, token

        return mutate(self.state, key, change, ttl_s=hold_s + 60)

    def release_slot(self, model: ModelConfig, token: str | None) -> None:
        if token is None or token == "unlimited":
            return
        key = "cc:" + deployment_key(model)
        now = self.clock()

        def change(rec: StateRecord | None) -> tuple[dict[str, Any] | None, None]:
            if rec is None or token not in rec.value.get("holders", {}):
                return None, None
            holders = {t: exp for t, exp in rec.value["holders"].items() if t != token and exp > now}
            return {"holders": holders}, None

        mutate(self.state, key, change, ttl_s=3600)


def _now(rec: StateRecord | None, clock: Callable[[], float]) -> float:
    """Read the clock per attempt and never before the stored timestamp: time going backwards across
    workers would refill the same interval twice."""
    now = clock()
    return max(now, float(rec.value.get("ts", now))) if rec else now


def _refill(rec: StateRecord | None, limits: LimitsConfig, now: float) -> dict[str, float]:
    rates = limits.rates_per_s()
    caps = {k: r * limits.burst_s for k, r in rates.items()}
    if rec is None:
        return dict(caps)
    levels = rec.value.get("levels", {})
    elapsed = max(0.0, now - float(rec.value.get("ts", now)))
    return {k: min(caps[k], float(levels.get(k, caps[k])) + rates[k] * elapsed) for k in rates}
