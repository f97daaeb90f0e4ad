"""The usage ledger: what every billed provider call cost, summed per tenant and UTC day on the state store.

Each call adds its usage to `usage:TENANT:DAY:SHARD` under its group `task|model|lane` (calls, tokens by
kind, cost, and what the prompt cache, the response cache and the batch discount saved): one upsert on a
store that can sum in place (`core.ports.CountingState`, the embedded one: always shard 0), else a read and
a compare-and-set, whose shard (one of `SHARDS`, by job id) spreads a busy tenant's writers over several
records. Reports read the days asked for and sum them by any of tenant, task, model, lane and day. The
per-call detail stays on each job's attempts; this is what spend reports and dashboards read without
scanning jobs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from core.governance.state import add_counts
from core.models import Usage
from core.ports import CountingState, StateStore

SHARDS = 4
TRIES = 20
KEEP_S = 400 * 86400
FIELDS = (
    "calls",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_usd",
    "saved_prompt_cache_usd",
    "saved_response_cache_usd",
    "saved_batch_usd",
)
DIMENSIONS = ("tenant", "task", "model", "lane", "day")


REPORT_DAYS = 30  # what a report covers when no first day is given


def day_of(t: float) -> str:
    day = int(t // 86400)  # UTC days are whole multiples of 86,400 s of epoch time
    return _day_names.get(day) or _name_day(day)


_day_names: dict[int, str] = {}


def _name_day(day: int) -> str:
    if len(_day_names) > 1024:
        _day_names.clear()
    name = _day_names[day] = dt.datetime.fromtimestamp(day * 86400, dt.UTC).strftime("%Y-%m-%d")
    return name


def day_start(value: str) -> float:
    """The start of a UTC day given as YYYY-MM-DD; ValueError otherwise."""
    return dt.datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=dt.UTC).timestamp()


def default_since(now: float) -> float:
    return now - (REPORT_DAYS - 1) * 86400


class DailyCounts:
    """Counters per tenant and UTC day under `PREFIX:TENANT:DAY:SHARD`, grouped, kept `KEEP_S`: the write both
    the usage and the outcome ledgers make. One upsert on a store that sums in place (`CountingState`: always
    shard 0), else a read and a compare-and-set on the shard the job's id picks, so a busy tenant's writers
    spread over `SHARDS` records. `sum_days` reads them back."""

    def __init__(self, state: StateStore, prefix: str, clock: Callable[[], float]) -> None:
        self.state = state
        self.prefix = prefix
        self.counting = state if isinstance(state, CountingState) else None  # checked once: a Protocol check costs
        self.clock = clock

    def add(self, tenant: str, job_id: str, group: str, delta: dict[str, int | float]) -> None:
        shard = 0 if self.counting is not None else int(hashlib.sha256(job_id.encode()).hexdigest(), 16) % SHARDS
        key = f"{self.prefix}:{tenant}:{day_of(self.clock())}:{shard}"
        if self.counting is not None:
            self.counting.add_counts(key, group, delta, ttl_s=KEEP_S)
        else:
            add_counts(self.state, key, group, delta, ttl_s=KEEP_S, tries=TRIES)


class UsageLedger:
    def __init__(self, state: StateStore, *, clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.counts = DailyCounts(state, "usage", clock)
        self.clock = clock

    def add(
        self,
        *,
        tenant: str,
        task: str | None,
        model: str,
        lane: str,
        job_id: str,
        usage: Usage,
        saved_prompt_cache_usd: float = 0.0,
        saved_response_cache_usd: float = 0.0,
        saved_batch_usd: float = 0.0,
    ) -> None:
        group = f"{task or '-'}|{model}|{lane}"
        delta = {
            "calls": 0 if usage.cached else 1,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_read_tokens": usage.cache_read_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
            "cost_usd": usage.cost_usd,
            "saved_prompt_cache_usd": saved_prompt_cache_usd,
            "saved_response_cache_usd": saved_response_cache_usd,
            "saved_batch_usd": saved_batch_usd,
        }
        self.counts.add(tenant, job_id, group, delta)

    def report(self, tenants: Iterable[str], *, since: float, by: list[str]) -> list[dict[str, Any]]:
        """Rows summed by the `by` dimensions, biggest cost first (days from `since` to today, UTC)."""
        sums = sum_days(
            self.state, "usage", tenants, days_from(since, self.clock()), by, ("task", "model", "lane"), FIELDS
        )
        rows = [
            {
                **dict(zip(by, k, strict=True)),
                **{f: (int(v) if f.endswith("tokens") or f == "calls" else v) for f, v in vals.items()},
            }
            for k, vals in sums.items()
        ]
        return sorted(rows, key=lambda r: -r["cost_usd"])


def days_from(since: float, now: float) -> list[str]:
    """The UTC days from `since`'s to `now`'s."""
    days, t = [], since
    while day_of(t) <= day_of(now):
        days.append(day_of(t))
        t += 86400
    return days


def sum_days(
    state: StateStore,
    kind: str,
    tenants: Iterable[str],
    days: list[str],
    by: list[str],
    group_dims: tuple[str, ...],
    fields: Iterable[str],
) -> dict[tuple[str, ...], dict[str, float]]:
    """The `kind:TENANT:DAY:SHARD` records' groups (named by `group_dims`, joined with '|') summed by `by`."""
    fields = tuple(fields)
    sums: dict[tuple[str, ...], dict[str, float]] = defaultdict(lambda: dict.fromkeys(fields, 0.0))
    for tenant in tenants:
        for day in days:
            for shard in range(SHARDS):
                rec = state.get(f"{kind}:{tenant}:{day}:{shard}")
                for group, row in rec.value["groups"].items() if rec is not None else ():
                    dims = {"tenant": tenant, "day": day, **dict(zip(group_dims, group.split("|"), strict=False))}
                    acc = sums[tuple(dims[d] for d in by)]
                    for f in fields:
                        acc[f] = round(acc[f] + row.get(f, 0), 10)
    return sums


def prompt_cache_saving(
    usage: Usage, input_per_mtok: float, read_per_mtok: float | None, write_per_mtok: float | None
) -> float:
    """What reading the cache saved against plain input, less what writing it cost above plain input."""
    read = read_per_mtok if read_per_mtok is not None else input_per_mtok
    write = write_per_mtok if write_per_mtok is not None else input_per_mtok
    micro = usage.cache_read_tokens * (input_per_mtok - read) - usage.cache_write_tokens * (write - input_per_mtok)
    return round(micro / 1_000_000, 10)
