"""How many container workers a configuration keeps busy: the replica cap the provider limits admit."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from core.config.worker import ModelConfig


@dataclass(frozen=True)
class ReplicaCap:
    """How many pull-worker replicas the configured provider limits keep busy. The shared token buckets already
    hold every replica to the limits, so replicas past this cap only hold messages while they wait for tokens: a
    deployment's maxReplicaCount (KEDA), MaxCapacity (ECS) or maxReplicas (Container Apps) should be this."""

    in_flight: dict[str, float | None]  # per model: the calls in flight its limits admit; None where unlimited
    concurrency: int  # pull.concurrency: calls in flight one replica runs
    seconds_per_call: float

    @property
    def total(self) -> float | None:
        values = list(self.in_flight.values())
        return None if not values or None in values else sum(v for v in values if v is not None)

    @property
    def replicas(self) -> int | None:
        """None: some model has no limit, so the limits set no cap (the provider's own 429s will)."""
        total = self.total
        return None if total is None else max(1, math.ceil(total / self.concurrency))


def replica_cap(models: Mapping[str, ModelConfig], concurrency: int, seconds_per_call: float) -> ReplicaCap:
    """Little's law per model: requests per minute x seconds a call / 60 calls in flight, or its max_concurrency,
    whichever is lower. Token-per-minute limits depend on the jobs' sizes and are left out: they only lower it."""

    def admitted(model: ModelConfig) -> float | None:
        limits = model.limits
        bounds: list[float | None] = [] if limits is None else [limits.max_concurrency]
        if limits is not None and limits.requests_per_minute is not None:
            bounds.append(limits.requests_per_minute * seconds_per_call / 60)
        known = [b for b in bounds if b is not None]
        return min(known) if known else None

    return ReplicaCap({name: admitted(m) for name, m in models.items()}, concurrency, seconds_per_call)
