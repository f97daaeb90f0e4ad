"""Circuit breaker per model deployment: closed, open, half-open with exactly one probe.

It opens after `failure_threshold` consecutive failures (Envoy's outlier detection counts the
same way), a count forgotten after `window_s` of quiet. State lives in the StateStore so every
worker sees the same circuit. The healthy path never writes: a worker reads the state at most
once per `cache_s`, and a success writes only to clear a non-zero failure count. Only transient failures (5xx, 529, timeouts, resets) count: a 429 is the rate
limiter's business and a 400 proves the provider is up. When the cooldown ends, the one worker
whose conditional write moves the circuit to half-open makes the probe call; the others keep
treating it as open until the probe closes it (success) or reopens it for a doubled cooldown.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from core.config.api import BreakerConfig
from core.config.worker import ModelConfig
from core.governance.ratelimit import deployment_key
from core.governance.state import mutate
from core.logs import log_event
from core.models import ErrorClass
from core.ports import StateRecord, StateStore

STATE_TTL_S = 24 * 3600.0


@dataclass
class Gate:
    kind: Literal["closed", "probe", "open"]
    key: str
    retry_in_s: float = 0.0
    probe_id: str | None = None


class CircuitBreaker:
    def __init__(self, state: StateStore, config: BreakerConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.config = config
        self.clock = clock
        self._seen: dict[str, tuple[float, dict[str, Any] | None]] = {}  # key -> (read at, value)

    def _fresh(self, key: str) -> tuple[float, dict[str, Any] | None] | None:
        """This worker's last read of `key` (read at, value), while it is younger than `cache_s`."""
        hit = self._seen.get(key)
        return hit if hit is not None and self.clock() - hit[0] < self.config.cache_s else None

    def _read(self, key: str) -> dict[str, Any] | None:
        hit = self._fresh(key)
        if hit is not None:
            return hit[1]
        rec = self.state.get(key)
        value = rec.value if rec else None
        self._remember(key, value)
        return value

    def _remember(self, key: str, value: dict[str, Any] | None) -> None:
        self._seen[key] = (self.clock(), value)

    def cached_gate(self, model: ModelConfig) -> Gate | None:
        """`check`'s answer when this worker's cached read settles it (no state store call), else None."""
        key = "cb:" + deployment_key(model)
        if not self.config.enabled:
            return Gate("closed", key)
        hit = self._fresh(key)
        return None if hit is None else self._implied_gate(key, hit[1])

    def records(self, gate: Gate, error_class: ErrorClass | None) -> bool:
        """Whether `record` may write: a failure, a probe's result, or a success that clears failures."""
        if not self.config.enabled:
            return False
        if gate.kind == "probe" or error_class is ErrorClass.transient:
            return True
        hit = self._fresh(gate.key)
        return hit is None or bool((hit[1] or {}).get("failures"))

    def check(self, model: ModelConfig, *, probe_timeout_s: float) -> Gate:
        key = "cb:" + deployment_key(model)
        if not self.config.enabled:
            return Gate("closed", key)
        settled = self._implied_gate(key, self._read(key))
        if settled is not None:
            return settled
        # cooldown over (or the last probe's worker vanished): try to become the single probe
        probe_id = uuid.uuid4().hex

        def change(rec: StateRecord | None) -> tuple[dict[str, Any] | None, Gate]:
            cur = rec.value if rec else None
            settled = self._implied_gate(key, cur)
            if settled is not None:
                return None, settled
            assert cur is not None  # a missing record settles as closed
            t = self.clock()
            new = {**cur, "state": "half_open", "probe_id": probe_id, "probe_expires": t + probe_timeout_s}
            return new, Gate("probe", key, probe_id=probe_id)

        gate = mutate(self.state, key, change, ttl_s=STATE_TTL_S)
        self._seen.pop(key, None)
        if gate.kind == "probe":
            log_event("breaker.half_open", deployment=key[3:])
        return gate

    def _implied_gate(self, key: str, value: dict[str, Any] | None) -> Gate | None:
        """The gate a state implies on its own, or None when the caller may try to become the probe."""
        if value is None or value.get("state") == "closed":
            return Gate("closed", key)
        now = self.clock()
        if value["state"] == "open" and now < value["open_until"]:
            return Gate("open", key, retry_in_s=value["open_until"] - now)
        if value["state"] == "half_open" and now < value["probe_expires"]:
            return Gate("open", key, retry_in_s=min(self.config.cooldown_s, value["probe_expires"] - now))
        return None

    def record(self, gate: Gate, error_class: ErrorClass | None) -> None:
        """Report a call's outcome (`None` = success). Writes only on failures and on probe results."""
        if not self.config.enabled:
            return
        failed = error_class is ErrorClass.transient
        if gate.kind == "probe":
            self._finish_probe(gate, failed)
        elif failed:
            self._count_failure(gate.key)
        else:
            seen = self._read(gate.key)
            if seen is not None and seen.get("state") == "closed" and seen.get("failures", 0) > 0:
                self._reset(gate.key)

    def _reset(self, key: str) -> None:
        def change(rec: StateRecord | None) -> tuple[dict[str, Any] | None, None]:
            cur = rec.value if rec else None
            if cur is None or cur.get("state") != "closed" or not cur.get("failures"):
                return None, None
            return {"state": "closed", "failures": 0, "window_start": self.clock()}, None

        mutate(self.state, key, change, ttl_s=STATE_TTL_S)
        self._seen.pop(key, None)

    def abandon(self, gate: Gate) -> None:
        """A probe that never made its call (deferred, lost a race): let the next worker probe at once."""
        if gate.kind != "probe":
            return

        def change(rec: StateRecord | None) -> tuple[dict[str, Any] | None, None]:
            cur = rec.value if rec else None
            if cur is None or cur.get("probe_id") != gate.probe_id:
                return None, None
            return {**cur, "state": "open", "open_until": self.clock(), "probe_id": None}, None

        mutate(self.state, gate.key, change, ttl_s=STATE_TTL_S)
        self._seen.pop(gate.key, None)

    def _finish_probe(self, gate: Gate, failed: bool) -> None:
        def change(rec: StateRecord | None) -> tuple[dict[str, Any] | None, str]:
            cur = rec.value if rec else None
            if cur is None or cur.get("probe_id") != gate.probe_id:
                return None, "stale"  # another probe took over after ours expired
            t = self.clock()
            if not failed:
                return {"state": "closed", "failures": 0, "window_start": t}, "closed"
            cooldown = min(self.config.max_cooldown_s, float(cur.get("cooldown_s", self.config.cooldown_s)) * 2)
            return {
                "state": "open",
                "open_until": t + cooldown,
                "cooldown_s": cooldown,
                "opened_at": t,
                "failures": cur.get("failures", 0),
            }, "reopened"

        result = mutate(self.state, gate.key, change, ttl_s=STATE_TTL_S)
        self._seen.pop(gate.key, None)
        if result != "stale":
            log_event("breaker." + result, deployment=gate.key[3:])

    def _count_failure(self, key: str) -> None:
        cfg = self.config

        def change(rec: StateRecord | None) -> tuple[dict[str, Any] | None, bool]:
            cur: dict[str, Any] = rec.value if rec else {"state": "closed", "failures": 0, "window_start": self.clock()}
            if cur.get("state") != "closed":
                return None, False  # already open or probing: in-flight stragglers don't extend it
            t = self.clock()
            failures, start = int(cur.get("failures", 0)), float(cur.get("window_start", t))
            if t - start > cfg.window_s:
                failures, start = 0, t
            failures += 1
            if failures >= cfg.failure_threshold:
                return {
                    "state": "open",
                    "open_until": t + cfg.cooldown_s,
                    "cooldown_s": cfg.cooldown_s,
                    "opened_at": t,
                    "failures": failures,
                }, True
            return {"state": "closed", "failures": failures, "window_start": start}, False

        opened = mutate(self.state, key, change, ttl_s=STATE_TTL_S)
        self._seen.pop(key, None)
        if opened:
            log_event("breaker.opened", deployment=key[3:], cooldown_s=cfg.cooldown_s)

    def status(self, model: ModelConfig) -> dict[str, Any]:
        """Current state for operators (`alto breakers`), read straight from the store."""
        rec = self.state.get("cb:" + deployment_key(model))
        return rec.value if rec else {"state": "closed", "failures": 0}
