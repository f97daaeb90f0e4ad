"""Soak: N jobs through the local runtime under duplicate deliveries and injected provider faults.

Defaults follow the governance issue: 2,000 jobs, 30% duplicate deliveries, 25% transient faults
(429 with retry-after, 529, 500, connection resets, malformed bodies, timeouts) and 5% permanent
400s. Every job's calls are counted by the fake server (real HTTP) through a marker in its prompt.
Prints one JSON line; `ok` is true when terminal == jobs, lost == 0, max_calls_per_job <= budget,
double_billed == 0 and permanent_retried == 0.

    python benchmarks/soak.py [--jobs 2000] [--duplicates 0.3] [--transient 0.25] [--permanent 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.bootstrap import bootstrap
from core.config.worker import Settings
from core.embedded.queue import SqliteQueue
from core.entrypoints.local import WorkerPool, unwire_wakeups, wire_wakeups
from core.models import JobRequest
from core.secrets import EnvSecrets
from core.testing.chaos import ChaosQueue
from core.testing.fake_anthropic import FakeAnthropic, FaultPlan, ServerThread

# how the transient share is split across fault kinds (sums to 1)
TRANSIENT_MIX = {"429": 0.24, "529": 0.2, "500": 0.2, "reset": 0.16, "malformed": 0.12, "timeout": 0.08}


async def soak(url: str, fake: FakeAnthropic, a: argparse.Namespace, data_dir: str) -> dict:
    settings = Settings.model_validate(
        {
            "data_dir": data_dir,
            "providers": {"fake": {"type": "anthropic", "api_key": "env:K", "base_url": url, "timeout_s": 1.0}},
            "models": {
                "m": {"provider": "fake", "model_id": "claude-haiku-4-5", "input_per_mtok": 1, "output_per_mtok": 5}
            },
            "routing": {"default": {"model": "m", "max_tokens": 64}},
            "governance": {
                "max_attempts": a.budget,
                "backoff_base_s": 0.02,
                "backoff_max_s": 0.2,
                "retry_after_cap_s": 0.2,
                "lease_s": 5,
                "in_process_wait_s": 0.1,
                "breaker": {"cooldown_s": 0.5, "max_cooldown_s": 2},
            },
            "queue": {"visibility_timeout_s": 10, "max_receives": 6, "poll_interval_s": 0.05},
            "logging": {"level": os.environ.get("SOAK_LOG", "ERROR")},
        }
    )
    q = settings.queue
    inner = SqliteQueue(
        Path(data_dir) / "jobs.db", visibility_timeout_s=q.visibility_timeout_s, max_receives=q.max_receives
    )
    chaos = ChaosQueue(inner, duplicate_rate=a.duplicates, redeliver_rate=a.redeliveries, seed=a.seed)
    app = bootstrap(settings, secrets=EnvSecrets({"K": "test-key"}), queue=chaos)
    stop = asyncio.Event()
    pools = [WorkerPool(app, concurrency=a.inflight // 2) for _ in range(2)]
    wire_wakeups(app, pools)
    tasks = [asyncio.create_task(p.run(stop)) for p in pools]
    t0 = time.perf_counter()
    ids = []
    for i in range(a.jobs):
        job, _ = app.service.submit("soak", JobRequest(prompt=f"question {i} marker:s{i}"))
        ids.append(job.id)
        if i % 50 == 0:
            await asyncio.sleep(0)  # let workers start while we submit
    pending = set(ids)
    deadline = time.monotonic() + a.timeout
    while pending and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        pending = {j for j in pending if not app.store.get(j).status.terminal}
    elapsed = time.perf_counter() - t0
    stop.set()
    for p in pools:
        p.notify()
    await asyncio.gather(*tasks)
    unwire_wakeups(app)
    await app.providers.aclose()

    jobs = [app.store.get(j) for j in ids]
    by_status = {s: sum(1 for j in jobs if j.status.value == s) for s in ("succeeded", "failed", "dead_lettered")}
    histories = [fake.history_by_marker.get(f"s{i}", []) for i in range(a.jobs)]
    terminal = sum(by_status.values())
    out = {
        "benchmark": "soak",
        "jobs": a.jobs,
        "terminal": terminal,
        "lost": a.jobs - terminal,
        **by_status,
        "provider_calls": sum(len(h) for h in histories),
        "max_calls_per_job": max((len(h) for h in histories), default=0),
        "budget": a.budget,
        "double_billed": sum(
            1 for j, h in zip(jobs, histories, strict=True) if j.status.value == "succeeded" and h.count("ok") > 1
        ),
        "paid_twice_any_status": sum(1 for h in histories if h.count("ok") > 1),
        "permanent_retried": sum(1 for h in histories if "400" in h[:-1]),
        "budget_exceeded": sum(1 for h in histories if len(h) > a.budget),
        # attempts that started and never finished (no process dies here, so 0; tests/test_kill.py kills)
        "lost_attempts": sum(1 for j in jobs for at in j.attempts if at.outcome == "lost"),
        "duplicate_deliveries": chaos.duplicates_sent,
        "early_redeliveries": chaos.early_redeliveries,
        "faults": {k: v for k, v in fake.stats.items() if k != "calls"},
        "elapsed_s": round(elapsed, 2),
    }
    out["ok"] = (
        out["terminal"] == a.jobs
        and out["lost"] == 0
        and out["max_calls_per_job"] <= a.budget
        and out["double_billed"] == 0
        and out["permanent_retried"] == 0
    )
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--duplicates", type=float, default=0.30)
    p.add_argument("--redeliveries", type=float, default=0.05, help="early redelivery rate while a job runs")
    p.add_argument("--transient", type=float, default=0.25)
    p.add_argument("--permanent", type=float, default=0.05)
    p.add_argument("--budget", type=int, default=3)
    p.add_argument("--inflight", type=int, default=100)
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args(argv)
    rates = {k: a.transient * w for k, w in TRANSIENT_MIX.items()}
    rates["400"] = a.permanent
    fake = FakeAnthropic(FaultPlan(rates=rates, retry_after_s=2, timeout_s=3, seed=a.seed))
    with ServerThread(fake) as srv, tempfile.TemporaryDirectory() as d:
        result = asyncio.run(soak(srv.url, fake, a, d))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
