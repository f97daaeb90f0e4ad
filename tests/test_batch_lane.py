"""The batch lane against the fake Message Batches API: a batch job is sent with others, priced at the
batch discount and finalised like an online reply; results applied twice bill once; an errored or expired
request finishes online within the job's budget."""

from __future__ import annotations

import asyncio

import pytest

from core.entrypoints.local import run_until_done
from core.models import JobRequest, JobStatus
from tests.conftest import anthropic_config


def lane_config(url: str, **batch: object) -> dict:
    cfg = anthropic_config(url)
    cfg["batch"] = {"flush_s": 0.2, "max_requests": 100, "poll_s": 0.1, **batch}
    return cfg


def tick(app) -> dict:
    async def go() -> dict:
        try:
            return await app.service.batch_tick()
        finally:
            await app.providers.aclose()

    return asyncio.run(go())


def submit_batch(app, n: int, **extra: object) -> list[str]:
    ids = [
        app.service.submit("acme", JobRequest(prompt=f"not urgent {i}", lane="batch", **extra))[0].id for i in range(n)
    ]
    asyncio.run(run_until_done(app, [], timeout_s=0))  # (nothing to wait for: the messages are processed below)
    return ids


def deliver_all(app) -> None:
    """Run the worker until the queue is empty: each batch job joins the pending batch and is acked."""

    async def go() -> None:
        from core.entrypoints.local import WorkerPool

        pool = WorkerPool(app, concurrency=8)
        stop = asyncio.Event()
        task = asyncio.create_task(pool.run(stop))
        for _ in range(100):
            await asyncio.sleep(0.05)
            if app.queue.depth()["queued"] == 0:
                break
        stop.set()
        pool.notify()
        await task
        await app.providers.aclose()

    asyncio.run(go())


def test_batch_jobs_go_out_together_at_the_discount_and_finish_like_online_ones(clock, make_app, fake_anthropic):
    fake, url = fake_anthropic
    app = make_app(lane_config(url), clock=clock)
    ids = submit_batch(app, 3)
    deliver_all(app)
    jobs = [app.store.get(i) for i in ids]
    assert all(j.status is JobStatus.running and j.batch.state == "pending" for j in jobs)
    assert fake.stats["calls"] == 0  # nothing called online
    clock.advance(0.25)  # past batch.flush_s: the pending batch is due
    assert tick(app) == {"submitted": 3, "applied": 3, "returned": 0}  # one batch of three, ended at once
    assert fake.batches.created == 1
    m = app.settings.models["fake-sonnet"]
    for j in (app.store.get(i) for i in ids):
        assert j.status is JobStatus.succeeded
        assert j.result_text.startswith("Fake answer about: not urgent")
        assert j.batch.state == "submitted"
        assert j.batch.id.startswith("msgbatch_")
        u = j.usage
        assert u.cost_usd == pytest.approx(m.cost(u.input_tokens, u.output_tokens) * (1 - m.batch_discount), abs=1e-12)
        assert j.provider_calls == 1
        assert [a.outcome for a in j.attempts] == ["succeeded"]
    from core.views import JobView

    view = JobView.of(app.store.get(ids[0]))
    assert view.lane == "batch"
    assert view.batch_id == app.store.get(ids[0]).batch.id
    assert fake.stats["calls"] == 0
    assert fake.batches.items == 3


def test_results_applied_twice_bill_once(clock, make_app, fake_anthropic):
    fake, url = fake_anthropic
    app = make_app(lane_config(url), clock=clock)
    ids = submit_batch(app, 2)
    deliver_all(app)
    clock.advance(0.25)  # past batch.flush_s: the pending batch is due
    assert tick(app)["applied"] == 2  # sent, ended, applied; the batch is closed
    before = [app.store.get(i).usage for i in ids]
    again = {"id": app.store.get(ids[0]).batch.id, "model": "fake-sonnet", "items": ids}
    rec = app.state.get("batches:open")
    assert app.state.compare_and_set("batches:open", {"batches": [again]}, expected_version=rec.version)
    assert tick(app)["applied"] == 0  # the same results again: every job already has its reply
    assert [app.store.get(i).usage for i in ids] == before
    assert fake.batches.results_served == 2


@pytest.mark.parametrize("fault", ["expired", "errored"])
def test_an_expired_or_errored_request_finishes_online_within_its_budget(clock, make_app, fake_anthropic, fault):
    fake, url = fake_anthropic
    app = make_app(lane_config(url), clock=clock)
    (job_id,) = submit_batch(app, 1)
    fake.batches.outcomes[job_id] = fault
    deliver_all(app)
    clock.advance(0.25)  # past batch.flush_s: the pending batch is due
    assert tick(app)["returned"] == 1
    asyncio.run(run_until_done(app, [job_id], timeout_s=20))
    job = app.store.get(job_id)
    assert job.status is JobStatus.succeeded
    assert fake.stats["calls"] == 1  # answered online
    assert [a.outcome for a in job.attempts] == ["error", "succeeded"]
    assert fault in job.attempts[0].error
    assert job.batch.state == "returned"
    assert job.provider_calls == 2  # the batch attempt counted in the budget
    assert job.usage.cost_usd == app.settings.models["fake-sonnet"].cost(
        job.usage.input_tokens, job.usage.output_tokens
    )


def test_a_route_can_put_a_task_on_the_batch_lane_and_spend_is_ledgered_as_batch(clock, make_app, fake_anthropic):
    _fake, url = fake_anthropic
    cfg = lane_config(url)
    cfg["routing"]["rules"] = [
        {
            "name": "reports",
            "match": {"tasks": ["report"]},
            "route": {"model": "fake-sonnet", "lane": "batch", "max_tokens": 64},
        }
    ]
    app = make_app(cfg, clock=clock)
    batched = app.service.submit("acme", JobRequest(prompt="weekly report", task="report"))[0].id
    online = app.service.submit("acme", JobRequest(prompt="urgent question"))[0].id
    deliver_all(app)
    clock.advance(0.25)  # past batch.flush_s: the pending batch is due
    tick(app)
    tick(app)
    assert app.store.get(batched).status is JobStatus.succeeded
    assert app.store.get(online).status is JobStatus.succeeded
    rows = {r["lane"]: r for r in app.service.spend.report(["acme"], since=clock() - 60, by=["lane"])}
    assert rows["batch"]["calls"] == 1
    assert rows["online"]["calls"] == 1
    assert rows["batch"]["saved_batch_usd"] == pytest.approx(rows["batch"]["cost_usd"], abs=1e-12)  # 50% off
    assert rows["online"]["saved_batch_usd"] == 0


@pytest.mark.parametrize("fault", [None, "errored", "expired"])
def test_the_openai_batch_api_carries_the_same_lane(clock, make_app, fault):
    from core.testing.fake_anthropic import ServerThread
    from core.testing.fake_providers import FakeOpenAI

    fake = FakeOpenAI()
    with ServerThread(fake) as srv:
        cfg = lane_config("http://unused")
        cfg["providers"] = {
            "oai": {"type": "openai_compatible", "api_key": "env:FAKE_ANTHROPIC_KEY", "base_url": srv.url + "/v1"}
        }
        cfg["models"] = {
            "gpt": {"provider": "oai", "model_id": "gpt-4o-mini", "input_per_mtok": 0.15, "output_per_mtok": 0.6}
        }
        cfg["routing"] = {"default": {"model": "gpt", "max_tokens": 128}}
        app = make_app(cfg, clock=clock)
        ids = submit_batch(app, 2)
        fake.batch_api.expire = fault == "expired"
        if fault == "errored":
            fake.batch_api.errors = {ids[0]}
        deliver_all(app)
        clock.advance(0.25)  # past batch.flush_s: the pending batch is due
        counts = tick(app)
        assert counts["submitted"] == 2
        assert counts["applied"] + counts["returned"] == 2
        asyncio.run(run_until_done(app, ids, timeout_s=20))
    jobs = [app.store.get(i) for i in ids]
    assert all(j.status is JobStatus.succeeded for j in jobs)
    online = {"expired": 2, "errored": 1, None: 0}[fault]
    assert sum(fake.calls.values()) == online  # only the requests the batch could not answer ran online
    batched = [j for j in jobs if [a.outcome for a in j.attempts] == ["succeeded"]]
    m = app.settings.models["gpt"]
    for j in batched:
        assert j.usage.cost_usd == pytest.approx(m.cost(j.usage.input_tokens, j.usage.output_tokens) * 0.5, abs=1e-12)
    assert len(batched) == 2 - online


def test_a_batch_item_is_held_in_the_budget_and_settled_at_its_discounted_cost(clock, make_app, fake_anthropic):
    from core.governance.budget import scopes

    _fake, url = fake_anthropic
    cfg = lane_config(url)
    cfg["tenants"] = {"acme": {"budgets": {"daily_usd": 1.0}}}
    app = make_app(cfg, clock=clock)
    (job_id,) = submit_batch(app, 1)
    deliver_all(app)
    key = scopes("acme", None, app.settings.tenants["acme"].budgets, clock())[0].key
    assert len(app.state.get(key).value["holds"]) == 1  # held while the batch is out
    clock.advance(0.25)  # past batch.flush_s: the pending batch is due
    tick(app)
    job = app.store.get(job_id)
    rec = app.state.get(key).value
    assert job.status is JobStatus.succeeded
    assert rec["holds"] == {}
    assert rec["spent"] == pytest.approx(job.usage.cost_usd, abs=1e-12)
    assert job.usage.cost_usd > 0
