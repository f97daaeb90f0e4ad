"""Spend budgets: reservations on the state store that hold across processes, settle to the real cost,
reset with their UTC period, and count every billed call (retries and fallbacks included)."""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing
from pathlib import Path

import httpx
import pytest

from core.config.budgets import BudgetConfig
from core.embedded.stores import SqliteStateStore
from core.entrypoints.local import run_until_done
from core.governance.budget import Budgets, periods, scopes
from core.models import JobRequest, JobStatus
from core.testing.fake_anthropic import FakeAnthropic, FaultPlan, ServerThread
from core.testing.memory import MemoryStateStore
from tests.conftest import KEYS, ManualClock, anthropic_config

NOON = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC).timestamp()


def test_a_hold_settles_to_the_real_cost_and_releases_the_rest():
    clock = ManualClock(NOON)
    budgets = Budgets(MemoryStateStore(clock=clock), clock=clock)
    within = scopes("acme", None, BudgetConfig(daily_usd=1.0), clock())
    assert budgets.reserve(within, "j1:1", 0.6, hold_s=60) is None
    refused = budgets.reserve(within, "j2:1", 0.5, hold_s=60)  # 0.6 held + 0.5 > 1.0
    assert refused is not None
    assert refused.held == pytest.approx(0.6)
    assert "resets at 2026-12-02 00:00 UTC" in refused.message()
    budgets.charge(within, "j1:1", 0.1)  # the reply cost 0.1: the other 0.5 goes back
    assert budgets.reserve(within, "j2:1", 0.5, hold_s=60) is None
    budgets.release(within, "j2:1")  # a call that billed nothing
    rec = budgets.state.get(within[0].key)
    assert rec.value == {"spent": 0.1, "holds": {}}


def test_a_dead_workers_hold_expires_with_its_lease_and_the_period_resets_at_midnight_utc():
    clock = ManualClock(NOON)
    budgets = Budgets(MemoryStateStore(clock=clock), clock=clock)
    cfg = BudgetConfig(daily_usd=1.0, monthly_usd=10.0)
    assert budgets.reserve(scopes("acme", None, cfg, clock()), "lost:1", 1.0, hold_s=90) is None
    assert budgets.reserve(scopes("acme", None, cfg, clock()), "j:1", 0.5, hold_s=90) is not None
    clock.t += 91  # the worker died mid-call: its hold lapses with its lease
    assert budgets.reserve(scopes("acme", None, cfg, clock()), "j:1", 0.5, hold_s=90) is None
    budgets.charge(scopes("acme", None, cfg, clock()), "j:1", 1.0)
    assert budgets.exhausted(scopes("acme", None, cfg, clock())).scope.name == "tenant 'acme' daily"
    clock.t = periods(NOON)["daily"][1] + 1  # the next UTC day: a new daily record, the month's spend carried
    today = scopes("acme", None, cfg, clock())
    assert budgets.exhausted(today) is None
    assert budgets.reserve(today, "k:1", 0.9, hold_s=90) is None
    month = budgets.state.get(today[1].key)
    assert month.value["spent"] == 1.0
    assert today[1].key.endswith("m2026-12")


def test_a_task_budget_counts_on_top_of_the_tenants():
    clock = ManualClock(NOON)
    budgets = Budgets(MemoryStateStore(clock=clock), clock=clock)
    cfg = BudgetConfig(daily_usd=10.0, tasks={"summarize": {"daily_usd": 0.2}})
    assert len(scopes("acme", "summarize", cfg, clock())) == 2
    assert len(scopes("acme", "other", cfg, clock())) == 1
    refused = budgets.reserve(scopes("acme", "summarize", cfg, clock()), "j:1", 0.3, hold_s=60)
    assert refused is not None
    assert "task 'summarize' daily" in refused.message()
    assert (
        budgets.state.get(scopes("acme", None, cfg, clock())[0].key).value["holds"] == {}
    )  # none taken: all or nothing


def _reserve_many(path: str, worker: int, n: int, start: object) -> None:
    budgets = Budgets(SqliteStateStore(path))
    within = scopes("acme", None, BudgetConfig(daily_usd=0.5), __import__("time").time())
    start.wait()  # type: ignore[attr-defined]  # both processes ready: they race from here
    for i in range(n):
        budgets.reserve(within, f"w{worker}-{i}", 0.0025, hold_s=600)


def test_reservations_racing_from_two_processes_never_pass_the_limit(tmp_path: Path):
    path = str(tmp_path / "state.db")
    SqliteStateStore(path)  # schema first
    ctx = multiprocessing.get_context("spawn")  # separate processes, as two worker hosts: no inherited connection
    start = ctx.Barrier(2)
    procs = [ctx.Process(target=_reserve_many, args=(path, w, 200, start)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    import time

    rec = SqliteStateStore(path).get(scopes("acme", None, BudgetConfig(daily_usd=0.5), time.time())[0].key)
    holds = rec.value["holds"]
    assert len(holds) == 200  # 400 tried, $0.0025 each, $0.50 budget: exactly 200 admitted, however they interleaved


# ---------------------------------------------------------------- through the pipeline


def budget_config(url: str, **budgets: object) -> dict:
    cfg = anthropic_config(url, max_attempts=3, in_process_wait_s=0.05)
    cfg["tenants"] = {"acme": {"api_keys": ["env:ACME_KEY"], "budgets": budgets}}
    return cfg


def run(app, *requests: JobRequest):
    ids = [app.service.submit("acme", r)[0].id for r in requests]
    asyncio.run(run_until_done(app, ids, timeout_s=30))
    return [app.store.get(i) for i in ids]


def spent(app) -> float:
    import time

    cfg = app.settings.tenants["acme"].budgets
    rec = app.state.get(scopes("acme", None, cfg, time.time())[0].key)
    assert rec is not None
    assert rec.value["holds"] == {}  # nothing left held once the jobs are done
    return rec.value["spent"]


def test_retries_and_fallbacks_are_counted_and_spent_equals_what_the_jobs_cost(make_app):
    fake = FakeAnthropic(FaultPlan(script=["500", "ok", "429", "ok"]))
    with ServerThread(fake) as srv:
        cfg = budget_config(srv.url, daily_usd=5.0)
        cfg["models"]["backup"] = {
            **cfg["models"]["fake-sonnet"],
            "model_id": "claude-sonnet-4-5",
            "output_per_mtok": 30,
        }
        cfg["routing"]["default"]["fallbacks"] = {"rate_limited": ["backup"]}
        app = make_app(cfg, env={"ACME_KEY": KEYS["acme"]})
        (retried,) = run(app, JobRequest(prompt="first"))
        (fell_back,) = run(app, JobRequest(prompt="second"))
    assert [a.outcome for a in retried.attempts] == ["error", "succeeded"]
    assert fell_back.route.model == "backup"
    assert len(fell_back.attempts) == 2
    assert spent(app) == pytest.approx(retried.usage.cost_usd + fell_back.usage.cost_usd, abs=1e-9)


def test_a_call_that_does_not_fit_fails_naming_the_budget_or_waits_for_the_next_period(
    make_app, fake_anthropic, tmp_path
):
    """Spend that lands between the submit (which could pay) and the call (which now can't)."""
    import time

    fake, url = fake_anthropic

    def spend_all_but(app, left: float) -> None:
        key = scopes("acme", None, app.settings.tenants["acme"].budgets, time.time())[0].key
        assert app.state.put_if_absent(key, {"spent": 0.01 - left, "holds": {}})

    # the worst case of one call: ~80 input tokens x $3 + 256 max_tokens x $15 per million = ~$0.004
    app = make_app(budget_config(url, daily_usd=0.01), env={"ACME_KEY": KEYS["acme"]})
    job, _ = app.service.submit("acme", JobRequest(prompt="too dear"))
    spend_all_but(app, 0.001)
    asyncio.run(run_until_done(app, [job.id], timeout_s=10))
    job = app.store.get(job.id)
    assert job.status is JobStatus.failed
    assert fake.stats["calls"] == 0
    assert job.provider_calls == 0
    assert job.error.message.startswith("budget_exhausted: the tenant 'acme' daily budget of $0.01 has $0.009 spent")
    assert "resets at" in job.error.message
    app = make_app(
        budget_config(url, daily_usd=0.01, on_exhausted="defer"),
        env={"ACME_KEY": KEYS["acme"], "ALTO_DATA_DIR": str(tmp_path / "second")},
    )
    queued, _ = app.service.submit("acme", JobRequest(prompt="later"))
    spend_all_but(app, 0.001)
    asyncio.run(run_until_done(app, [queued.id], timeout_s=1.5))
    later = app.store.get(queued.id)
    assert later.status is JobStatus.queued
    assert later.provider_calls == 0
    assert fake.stats["calls"] == 0


def test_a_remainder_too_small_for_the_cheapest_call_gets_429_at_submit(live, fake_anthropic):
    """$0.001 left can't hold the ~$0.004 worst case of any call the route allows: the job could only fail
    budget_exhausted, so the submit says so now, with when the budget resets, and stores nothing."""
    fake, url = fake_anthropic
    _app, base = live(budget_config(url, daily_usd=0.001), env={"ACME_KEY": KEYS["acme"]})
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEYS['acme']}"}) as c:
        r = c.post("/v1/jobs", json={"prompt": "too dear"})
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "budget_exhausted", r.text
        assert "the cheapest call this request may make is held at up to $0.00" in r.json()["error"]["message"]
        assert int(r.headers["retry-after"]) > 0
        assert c.get("/v1/jobs").json()["jobs"] == []
    assert fake.stats["calls"] == 0


def test_a_tenant_over_its_budget_gets_429_at_submit_with_retry_after(live, fake_anthropic):
    _fake, url = fake_anthropic
    app, base = live(budget_config(url, daily_usd=0.01), env={"ACME_KEY": KEYS["acme"]})
    import time

    key = scopes("acme", None, app.settings.tenants["acme"].budgets, time.time())[0].key
    assert app.state.put_if_absent(key, {"spent": 0.01, "holds": {}})
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEYS['acme']}"}) as c:
        r = c.post("/v1/jobs", json={"prompt": "one more"})
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "budget_exhausted"
        assert 0 < int(r.headers["retry-after"]) <= 86401
        assert "resets at" in r.json()["error"]["message"]
        assert c.get("/v1/jobs").json()["jobs"] == []  # nothing stored
