"""The outcome ledger: how jobs ended, per tenant and UTC day, for the console's charts and `GET /v1/outcomes`.

Each job that reaches a terminal status adds one to `outcomes:TENANT:DAY:SHARD` under its group
`task|status|model`: a count, the summed submit-to-end latency, and a latency histogram (counts per
bucket), from which reports estimate percentiles as Prometheus' `histogram_quantile` does. Written the way
the usage ledger writes (one upsert, or a read and a compare-and-set on a shard), so a dashboard never
scans jobs. A replayed job that ends again counts again: these are endings, not distinct jobs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from core.governance.spend import DailyCounts, days_from, sum_days
from core.models import Job
from core.observability.metrics import task_of
from core.ports import StateStore

BOUNDS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, math.inf)  # seconds, each bucket's upper bound
BUCKETS = tuple(f"le_{b:g}" for b in BOUNDS)
FIELDS = ("jobs", "latency_s", *BUCKETS)
DIMENSIONS = ("tenant", "task", "status", "model", "day")
QUANTILES = (0.5, 0.9, 0.99)


class OutcomeLedger:
    def __init__(self, state: StateStore, *, clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.counts = DailyCounts(state, "outcomes", clock)
        self.clock = clock

    def add(self, job: Job) -> None:
        latency = max(0.0, (job.finished_at or job.updated_at) - job.created_at)
        bucket = next(name for name, bound in zip(BUCKETS, BOUNDS, strict=True) if latency <= bound)
        group = f"{task_of(job)}|{job.status.value}|{job.route.model if job.route else '-'}"
        self.counts.add(job.tenant, job.id, group, {"jobs": 1, "latency_s": round(latency, 3), bucket: 1})

    def report(self, tenants: Iterable[str], *, since: float, by: list[str]) -> list[dict[str, Any]]:
        """Rows by the `by` dimensions: jobs, mean latency and its p50, p90 and p99 (seconds), most jobs first."""
        sums = sum_days(
            self.state, "outcomes", tenants, days_from(since, self.clock()), by, ("task", "status", "model"), FIELDS
        )
        rows = []
        for k, vals in sums.items():
            jobs = int(vals["jobs"])
            counts = [vals[b] for b in BUCKETS]
            rows.append(
                {
                    **dict(zip(by, k, strict=True)),
                    "jobs": jobs,
                    "mean_latency_s": round(vals["latency_s"] / jobs, 3) if jobs else None,
                    **{f"p{round(q * 100)}_latency_s": quantile(q, counts) for q in QUANTILES},
                }
            )
        return sorted(rows, key=lambda r: -r["jobs"])


def quantile(q: float, counts: list[float]) -> float | None:
    """The q-quantile of a histogram over `BOUNDS`, interpolated linearly inside its bucket (the last, open
    bucket answers with its lower bound, as Prometheus does)."""
    total = sum(counts)
    if not total:
        return None
    rank, seen = q * total, 0.0
    for i, n in enumerate(counts):
        if seen + n >= rank and n:
            lower = BOUNDS[i - 1] if i else 0.0
            if math.isinf(BOUNDS[i]):
                return float(lower)
            return round(lower + (BOUNDS[i] - lower) * (rank - seen) / n, 3)
        seen += n
    return float(BOUNDS[-2])
