"""Response cache, rate limits, concurrency cap, circuit breaker and the reconciler.

Everything runs through the service and the local runtime against the fake Anthropic server over
real HTTP, with the state in real SQLite; the limiter and breaker are also driven directly with
two store connections standing in for two workers.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import httpx
import pytest

from core.config.api import BreakerConfig
from core.config.models import LimitsConfig, ModelConfig
from core.embedded.queue import SqliteQueue
from core.embedded.stores import SqliteStateStore
from core.entrypoints.local import run_until_done
from core.governance.breaker import CircuitBreaker
from core.governance.ratelimit import Deferral, RateLimiter, Reservation
from core.models import ErrorClass, JobRequest, JobStatus
from core.testing.fake_anthropic import FakeAnthropic, FaultPlan, ServerThread
from tests.conftest import KEYS, ManualClock, anthropic_config, wait_terminal
from tests.fakes.queues import RefusingQueue


def run(app, *requests: JobRequest, tenant: str = "acme", timeout: float = 30.0):
    ids = [app.service.submit(tenant, r)[0].id for r in requests]
    asyncio.run(run_until_done(app, ids, timeout_s=timeout))
    return [app.store.get(i) for i in ids]


def with_model(cfg: dict[str, Any], **model: Any) -> dict[str, Any]:
    cfg["models"]["fake-sonnet"].update(model)
    return cfg


# ---------------------------------------------------------------- response cache


def test_cache_hit_reuses_the_reply_costs_nothing_and_is_marked(make_app):
    with ServerThread(FakeAnthropic()) as srv:
        app = make_app(anthropic_config(srv.url, cache={"enabled": True, "ttl_s": 60}))
        (first,) = run(app, JobRequest(prompt="What is   a lease?"))
        (second,) = run(app, JobRequest(prompt="What is a lease?  "))  # same after whitespace normalisation
        (bypass,) = run(app, JobRequest(prompt="What is a lease?", cache=False))
        (other_tenant,) = run(app, JobRequest(prompt="What is a lease?"), tenant="beta")
        calls = srv.server.config.app.stats["calls"]
    assert first.status is second.status is JobStatus.succeeded
    assert first.usage.cost_usd > 0
    assert not first.usage.cached
    assert second.usage.cached
    assert second.usage.cost_usd == 0
    assert second.provider_calls == 0
    assert second.cached_from == first.id
    assert second.result_text == first.result_text
    assert "response cache hit" in second.route.reason
    assert second.attempts == []
    assert not bypass.usage.cached
    assert not other_tenant.usage.cached
    assert calls == 3  # first, the bypass, the other tenant


def test_cache_is_off_by_default(make_app):
    with ServerThread(FakeAnthropic()) as srv:
        app = make_app(anthropic_config(srv.url))
        jobs = run(app, JobRequest(prompt="same question"), JobRequest(prompt="same question"))
        calls = srv.server.config.app.stats["calls"]
    assert calls == 2
    assert not any(j.usage.cached for j in jobs)


def test_cache_key_changes_with_the_route():
    from core.governance.cache import cache_key
    from core.models import RouteDecision

    r = JobRequest(prompt="q")
    a = RouteDecision(provider="p", model="m", model_id="id-1")
    b = RouteDecision(provider="p", model="m", model_id="id-2")
    assert cache_key("t", r, a, 100, "tpl@1", []) != cache_key("t", r, b, 100, "tpl@1", [])
    assert cache_key("t", r, a, 100, "tpl@1", []) != cache_key("t", r, a, 100, "tpl@2", [])
    assert cache_key("t", r, a, 100, "tpl@1", []) != cache_key("t", r, a, 200, "tpl@1", [])


# ---------------------------------------------------------------- rate limits


def test_bucket_reservations_are_spaced_and_shared_between_workers(tmp_path):
    clock = ManualClock(1_000_000.0)
    model = ModelConfig(provider="p", model_id="m", limits=LimitsConfig(requests_per_minute=60, burst_s=2))
    worker_a = RateLimiter(SqliteStateStore(tmp_path / "s.db"), clock=clock)
    worker_b = RateLimiter(SqliteStateStore(tmp_path / "s.db"), clock=clock)
    got = [w.reserve(model, input_tokens=10, max_wait_s=2.5) for w in (worker_a, worker_b, worker_a, worker_b)]
    assert [round(r.wait_s, 6) for r in got[:4] if isinstance(r, Reservation)] == [0, 0, 1, 2]
    assert isinstance(w := worker_a.reserve(model, input_tokens=10, max_wait_s=2.5), Deferral)
    assert w.delay_s == pytest.approx(3.0)
    clock.t += 10  # refilled to capacity (2), not beyond
    assert worker_b.reserve(model, input_tokens=10, max_wait_s=0).wait_s == 0
    assert worker_b.reserve(model, input_tokens=10, max_wait_s=0).wait_s == 0
    assert isinstance(worker_b.reserve(model, input_tokens=10, max_wait_s=0), Deferral)


def test_output_tokens_are_charged_after_the_reply(tmp_path):
    clock = ManualClock(1_000_000.0)
    model = ModelConfig(provider="p", model_id="m", limits=LimitsConfig(output_tokens_per_minute=600, burst_s=60))
    limiter = RateLimiter(SqliteStateStore(tmp_path / "s.db"), clock=clock)
    r = limiter.reserve(model, input_tokens=100, max_wait_s=0)
    assert isinstance(r, Reservation)
    assert r.wait_s == 0
    limiter.correct(model, r, input_tokens=90, output_tokens=900)  # 300 tokens of debt at 10 tokens/s
    nxt = limiter.reserve(model, input_tokens=1, max_wait_s=60)
    assert isinstance(nxt, Reservation)
    assert nxt.wait_s == pytest.approx(30.0)


def test_empty_bucket_defers_without_spending_an_attempt_and_no_429s(make_app):
    # the provider allows 60 rpm with a burst of 1; so do we, and jobs may not wait in process
    with ServerThread(FakeAnthropic(FaultPlan(rpm=60, burst=1))) as srv:
        cfg = with_model(
            anthropic_config(srv.url, in_process_wait_s=0), limits={"requests_per_minute": 60, "burst_s": 1}
        )
        cfg["queue"] = {"max_receives": 1}  # a deferral must not use up the receive count
        app = make_app(cfg)
        jobs = run(app, *[JobRequest(prompt=f"q{i}") for i in range(3)])
        stats = srv.server.config.app.stats
    assert [j.status for j in jobs] == [JobStatus.succeeded] * 3
    assert [j.provider_calls for j in jobs] == [1, 1, 1]
    assert stats["429_rate_limit"] == 0
    assert stats["calls"] == 3


def test_a_token_margin_raises_the_reservation_by_its_share_not_by_a_share_of_the_window(make_app):
    """The shipped configs set `token_margin: 0.25` (Claude counts up to ~25% above cl100k_base) beside a
    50,000 input-tokens-per-minute limit. The margin is a share of the prompt: a 70-token prompt reserves
    ~88 tokens, not 25% of a 200,000-token window (which took the whole minute's bucket per call, so one
    job a minute ran and the rest were deferred)."""
    with ServerThread(FakeAnthropic(FaultPlan())) as srv:
        cfg = with_model(
            anthropic_config(srv.url, in_process_wait_s=0),
            token_margin=0.25,
            limits={"requests_per_minute": 50, "input_tokens_per_minute": 50_000},
        )
        app = make_app(cfg)
        jobs = run(app, *[JobRequest(prompt=f"question {i}") for i in range(5)])
        level = app.state.get("rl:fake:claude-haiku-4-5").value["levels"]["input_tokens"]
    assert [j.status for j in jobs] == [JobStatus.succeeded] * 5
    assert all(not j.attempts[0].error_class for j in jobs)
    assert [j.provider_calls for j in jobs] == [1] * 5
    assert level > 50_000 - 5 * 200  # five calls took their prompts' tokens, not five windows' margins


def test_without_our_limiter_the_same_load_gets_429s(make_app):
    """The control for the test above: the fake really enforces its limit."""
    with ServerThread(FakeAnthropic(FaultPlan(rpm=60, burst=1))) as srv:
        app = make_app(anthropic_config(srv.url, max_attempts=1))
        jobs = run(app, *[JobRequest(prompt=f"q{i}") for i in range(3)])
        stats = srv.server.config.app.stats
    assert stats["429_rate_limit"] >= 1
    assert any(j.status is JobStatus.dead_lettered and j.error.error_class is ErrorClass.rate_limited for j in jobs)


def test_concurrency_cap_holds_across_worker_loops(make_app):
    with ServerThread(FakeAnthropic(FaultPlan(latency_s=0.2))) as srv:
        app = make_app(with_model(anthropic_config(srv.url), limits={"max_concurrency": 2}))
        ids = [app.service.submit("acme", JobRequest(prompt=f"q{i}"))[0].id for i in range(8)]
        asyncio.run(run_until_done(app, ids, timeout_s=30, concurrency=8, pools=2))
        fake = srv.server.config.app
    assert fake.max_inflight == 2
    assert fake.stats["calls"] == 8
    assert all(app.store.get(i).provider_calls == 1 for i in ids)
    holders = app.state.get("cc:fake:claude-haiku-4-5").value["holders"]
    assert holders == {}  # every slot released


# ---------------------------------------------------------------- circuit breaker


def test_breaker_opens_then_one_probe_among_workers_closes_it(tmp_path):
    clock = ManualClock(1_000_000.0)
    cfg = BreakerConfig(failure_threshold=3, window_s=30, cooldown_s=10, cache_s=0)
    model = ModelConfig(provider="p", model_id="m")
    a = CircuitBreaker(SqliteStateStore(tmp_path / "s.db"), cfg, clock=clock)
    b = CircuitBreaker(SqliteStateStore(tmp_path / "s.db"), cfg, clock=clock)
    for _ in range(2):
        a.record(a.check(model, probe_timeout_s=5), ErrorClass.transient)
    # a 429 is an answer from a provider that is up: it doesn't count, and it ends the streak (as in Envoy)
    a.record(a.check(model, probe_timeout_s=5), ErrorClass.rate_limited)
    for _ in range(2):
        a.record(b.check(model, probe_timeout_s=5), ErrorClass.transient)
    assert a.check(model, probe_timeout_s=5).kind == "closed"
    b.record(b.check(model, probe_timeout_s=5), ErrorClass.transient)
    gate = b.check(model, probe_timeout_s=5)
    assert gate.kind == "open"
    assert gate.retry_in_s == pytest.approx(10)
    clock.t += 10
    gates = [w.check(model, probe_timeout_s=5) for w in (a, b, a, b)]
    assert [g.kind for g in gates] == ["probe", "open", "open", "open"]
    a.record(gates[0], ErrorClass.transient)  # the probe fails: reopened for twice the cooldown
    assert b.check(model, probe_timeout_s=5).retry_in_s == pytest.approx(20)
    clock.t += 20
    probe = b.check(model, probe_timeout_s=5)
    assert probe.kind == "probe"
    b.record(probe, None)
    assert a.check(model, probe_timeout_s=5).kind == "closed"


def test_a_vanished_probe_is_replaced_after_its_timeout(tmp_path):
    clock = ManualClock(1_000_000.0)
    cfg = BreakerConfig(failure_threshold=1, cooldown_s=1, cache_s=0)
    model = ModelConfig(provider="p", model_id="m")
    a = CircuitBreaker(SqliteStateStore(tmp_path / "s.db"), cfg, clock=clock)
    a.record(a.check(model, probe_timeout_s=5), ErrorClass.transient)
    clock.t += 1
    assert a.check(model, probe_timeout_s=5).kind == "probe"  # ... and that worker dies
    clock.t += 4
    assert a.check(model, probe_timeout_s=5).kind == "open"
    clock.t += 1
    assert a.check(model, probe_timeout_s=5).kind == "probe"


def test_healthy_path_writes_nothing_and_a_success_clears_failures(make_app):
    with ServerThread(FakeAnthropic(FaultPlan(script=["529"]))) as srv:
        app = make_app(anthropic_config(srv.url, breaker={"cache_s": 0}))
        run(app, *[JobRequest(prompt=f"ok {i}") for i in range(2)])
        rec = app.state.get("cb:fake:claude-haiku-4-5")
        assert rec is not None
        assert rec.value["failures"] == 0  # the 529 counted, the next success cleared it
        version = rec.version
        run(app, *[JobRequest(prompt=f"more {i}") for i in range(10)])
        assert app.state.get("cb:fake:claude-haiku-4-5").version == version


def test_open_circuit_defers_jobs_without_spending_attempts_then_recovers(make_app):
    with ServerThread(FakeAnthropic(FaultPlan(script=["529", "529"]))) as srv:
        app = make_app(
            anthropic_config(
                srv.url,
                max_attempts=2,
                in_process_wait_s=0,
                breaker={"failure_threshold": 2, "cooldown_s": 1.0, "cache_s": 0},
            )
        )
        (broken,) = run(app, JobRequest(prompt="first"))
        assert broken.status is JobStatus.dead_lettered
        assert app.service.breaker.status(app.settings.models["fake-sonnet"])["state"] == "open"
        calls_before = srv.server.config.app.stats["calls"]
        jobs = run(app, *[JobRequest(prompt=f"later {i}") for i in range(3)])
        calls = srv.server.config.app.stats["calls"] - calls_before
    assert [j.status for j in jobs] == [JobStatus.succeeded] * 3
    assert calls == 3
    assert [j.provider_calls for j in jobs] == [1, 1, 1]
    assert sum("half-open probe" in j.route.reason for j in jobs) == 1


def test_a_deferred_job_says_what_it_waits_for_and_the_reconciler_does_not_multiply_its_messages(
    make_app, tmp_path, monkeypatch, capsys
):
    """Held by an open circuit, a job showed `queued` with no reason, and every reconcile sweep re-sent its
    message (12 live copies of one job after 230 s). Its deferral is now on the record: the view says what it
    waits for and until when, and a sweep leaves it alone while its deferred message is due."""
    from core.entrypoints.consumer import run_delivery

    with ServerThread(FakeAnthropic(FaultPlan(script=["529"]))) as srv:
        app = make_app(
            anthropic_config(
                srv.url,
                max_attempts=1,
                in_process_wait_s=0,
                breaker={"failure_threshold": 1, "cooldown_s": 60, "cache_s": 0},
            )
        )
        run(app, JobRequest(prompt="opens the circuit"))
        job, _ = app.service.submit("acme", JobRequest(prompt="held by it"))
        (delivery,) = app.queue.receive()
        outcome = asyncio.run(run_delivery(app.service, app.queue, delivery, deadline=time.time() + 30))
        assert outcome.action == "defer"
        view = app.service.view("acme", job.id)
        assert view.status is JobStatus.queued
        assert "circuit" in view.waiting.reason
        assert view.waiting.until > time.time() + 30
        assert view.attempts == []
        for _ in range(3):  # sweeps that would each have re-sent it
            assert app.service.reconcile(older_than_s=0.0)["requeued"] == 0
        assert app.queue.depth()["queued"] == 1  # the one deferred copy, not due yet; no other was sent
    assert app.store.get(job.id).waiting is not None
    # the CLI says it too: in the list's status column, and once while `jobs wait` waits
    from core.entrypoints import cli

    monkeypatch.setenv("ALTO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ALTO_API_KEYS", "acme=k1")
    monkeypatch.setenv("FAKE_ANTHROPIC_KEY", "test-key")
    capsys.readouterr()
    assert (
        cli.main(
            ["--config", str(tmp_path / "altostratus.yaml"), "jobs", "list", "--tenant", "acme", "--status", "queued"]
        )
        == 0
    )
    assert re.search(r"queued \(waiting: .*circuit.*; next try in \d+ s\)", capsys.readouterr().out)
    assert cli.main(["--config", str(tmp_path / "altostratus.yaml"), "jobs", "wait", job.id, "--timeout", "0.6"]) == 3
    err = capsys.readouterr().err
    assert err.count(f"job {job.id} is queued, waiting: ") == 1
    assert "circuit" in err


def test_open_circuit_takes_the_circuit_open_fallback(make_app):
    with ServerThread(FakeAnthropic(FaultPlan(rates={"529": 1.0}))) as srv:
        cfg = anthropic_config(srv.url, max_attempts=3, breaker={"failure_threshold": 2, "cooldown_s": 60})
        cfg["routing"]["default"]["fallbacks"] = {"circuit_open": ["offline"]}
        app = make_app(cfg)
        (job,) = run(app, JobRequest(prompt="What does the fallback do?"))
        calls = srv.server.config.app.stats["calls"]
    assert job.status is JobStatus.succeeded
    assert calls == 2
    assert [a.model for a in job.attempts] == ["fake-sonnet", "fake-sonnet", "offline"]
    assert job.route.model == "offline"
    assert "fallback circuit_open" in job.route.reason


def test_a_broken_deployment_holds_up_no_job_that_has_an_equivalent_one(make_app):
    """Two weighted deployments of one route; one refuses every connection. Its breaker opens on the first
    failure, and every job the route would have sent there goes to the healthy one instead of waiting out
    the cooldown (which held every job of the model for minutes)."""
    from core.testing.servers import free_port

    with ServerThread(FakeAnthropic(FaultPlan())) as srv:
        cfg = anthropic_config(
            srv.url,
            max_attempts=3,
            in_process_wait_s=0,
            breaker={"failure_threshold": 1, "cooldown_s": 300, "cache_s": 0},
        )
        cfg["providers"]["down"] = {
            "type": "anthropic",
            "api_key": "env:FAKE_ANTHROPIC_KEY",
            "base_url": f"http://127.0.0.1:{free_port()}",
            "timeout_s": 2,
        }
        cfg["models"]["east"] = {**cfg["models"]["fake-sonnet"], "provider": "down"}
        cfg["models"]["west"] = dict(cfg["models"]["fake-sonnet"])
        cfg["routing"]["default"] = {"targets": [{"model": "east"}, {"model": "west"}], "max_tokens": 64}
        app = make_app(cfg)
        jobs = run(app, *[JobRequest(prompt=f"question {i}") for i in range(12)])
    assert [j.status for j in jobs] == [JobStatus.succeeded] * 12
    east = [a for j in jobs for a in j.attempts if a.model == "east"]
    opened = min(a.finished_at for a in east)
    assert all(a.started_at <= opened for a in east)  # no call went east once its circuit was open
    assert all(sum(a.model == "east" for a in j.attempts) <= 1 for j in jobs)
    moved = [j for j in jobs if "east has an open circuit" in j.route.reason]
    assert moved
    assert all(j.route.model == "west" for j in jobs)


def test_unknown_fallback_model_is_a_config_error(make_app):
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"routing.default.fallbacks.circuit_open\[0\]: 'nope'"):
        make_app({"routing": {"default": {"model": "offline", "fallbacks": {"circuit_open": ["nope"]}}}})


# ---------------------------------------------------------------- enqueue failures and the reconciler


def test_enqueue_failure_returns_503_and_the_job_is_not_lost(live, tmp_path):
    flaky = RefusingQueue(SqliteQueue(tmp_path / "data" / "jobs.db"))
    app, url = live(queue=flaky)
    auth = {"authorization": f"Bearer {KEYS['acme']}"}
    with httpx.Client(base_url=url) as c:
        r = c.post("/v1/jobs", json={"prompt": "hello"}, headers=auth)
        assert r.status_code == 503
        assert r.headers["retry-after"] == "5"
        err = r.json()["error"]
        assert err["code"] == "queue_unavailable"
        assert "Idempotency-Key" in err["message"]
        job_id = err["job_id"]
        assert app.store.get(job_id).status is JobStatus.queued
        flaky.down = False
        assert app.service.reconcile(older_than_s=0) == {"requeued": 1, "checked": 1}
        body = wait_terminal(c, f"/v1/jobs/{job_id}", auth)
    assert body["status"] == "succeeded"


def test_idempotent_retry_after_enqueue_failure_queues_the_stored_job(live, tmp_path):
    flaky = RefusingQueue(SqliteQueue(tmp_path / "data" / "jobs.db"))
    _app, url = live(queue=flaky)
    auth = {"authorization": f"Bearer {KEYS['acme']}", "idempotency-key": "k-1"}
    with httpx.Client(base_url=url) as c:
        assert c.post("/v1/jobs", json={"prompt": "hello"}, headers=auth).status_code == 503
        flaky.down = False
        r = c.post("/v1/jobs", json={"prompt": "hello"}, headers=auth)
        assert r.status_code == 202
        assert r.headers["idempotent-replayed"] == "true"
        body = wait_terminal(c, r.json()["status_url"].removeprefix(url), auth)
    assert body["status"] == "succeeded"


def test_reconciler_leaves_fresh_and_finished_jobs_alone(make_app):
    app = make_app()
    (done,) = run(app, JobRequest(prompt="done"))
    assert done.status is JobStatus.succeeded
    app.service.submit("acme", JobRequest(prompt="just queued"))
    assert app.service.reconcile() == {"requeued": 0, "checked": 0}
