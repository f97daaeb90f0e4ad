"""Fast unit tests of the lifecycle stages on in-memory stores: the ledger's transitions, the attempt's
decisions and admission's always-release, with no HTTP, SQLite or clock sleeps."""

from __future__ import annotations

import asyncio

import pytest

from core.classify import classify
from core.config.worker import Settings
from core.errors import ConflictError, IllegalTransition, InputError, ProviderError
from core.governance.breaker import CircuitBreaker
from core.governance.budget import Budgets
from core.governance.ratelimit import Deferral, RateLimiter
from core.jobs import attempt as a
from core.jobs.admission import Admission, Governors, Ticket
from core.jobs.ledger import Ledger
from core.jobs.offload import Offload
from core.models import ErrorClass, Job, JobError, JobRequest, JobStatus, PromptAssembly, ProviderResult
from core.providers.registry import ProviderRegistry
from core.routing import Router
from core.secrets import EnvSecrets
from core.testing.memory import MemoryJobStore, MemoryStateStore
from core.workflows.max_calls import MaxCalls
from tests.conftest import ManualClock
from tests.contracts import check_job_store, check_state_store


def settings(**over: object) -> Settings:
    cfg: dict[str, object] = {
        "models": {
            "a": {"provider": "offline", "model_id": "a", "context_window": 8000, "limits": {"max_concurrency": 1}},
            "b": {"provider": "offline", "model_id": "b", "context_window": 8000},
            "small": {"provider": "offline", "model_id": "small", "context_window": 100},
        },
        "routing": {
            "default": {
                "model": "a",
                "fallbacks": {"rate_limited": ["b"], "circuit_open": ["b"], "context_overflow": ["small", "b"]},
            }
        },
        "governance": {"max_attempts": 3, "in_process_wait_s": 2.0, "breaker": {"failure_threshold": 1}},
    }
    cfg.update(over)
    return Settings.model_validate(cfg)


def fresh_ledger() -> tuple[ManualClock, Ledger]:
    clock = ManualClock(1000.0)
    return clock, Ledger(MemoryJobStore(), clock=clock)


def new_job(ledger: Ledger, clock: ManualClock, job_id: str = "j1") -> Job:
    job = Job(
        id=job_id,
        tenant="acme",
        request=JobRequest(prompt="q"),
        request_hash="h",
        trace_id="t",
        created_at=clock(),
        updated_at=clock(),
    )
    assert ledger.create(job)
    return job


def claim(ledger: Ledger, job: Job, clock: ManualClock) -> object:
    decision = Router(settings()).decision("a", "test")
    return ledger.claim(
        job,
        decision,
        lease_until=clock() + 60,
        template="t@1",
        chunk_ids=[],
        assembly=PromptAssembly(
            template="t@1",
            model="a",
            tokenizer="x",
            window=1,
            system_tokens=0,
            template_tokens=0,
            question_tokens=0,
            reserved_output_tokens=0,
            margin_tokens=0,
            context_budget=0,
            context_tokens=0,
            input_tokens=0,
        ),
    )


# ---------------------------------------------------------------- the in-memory stores keep the contracts


def test_memory_stores_keep_the_port_contracts():
    store = MemoryJobStore()
    check_job_store(store, corrupt=lambda job_id: store._rows.__setitem__(job_id, '{"id": "not a job"}'))
    check_state_store(lambda clock: MemoryStateStore(clock=clock))


# ---------------------------------------------------------------- ledger


def test_claim_spends_one_attempt_and_a_stale_copy_cannot_claim_again():
    clock, ledger = fresh_ledger()
    job = new_job(ledger, clock)
    stale = ledger.load(job.id)
    attempt = claim(ledger, job, clock)
    assert attempt is not None
    assert attempt.number == 1  # type: ignore[attr-defined]
    stored = ledger.load(job.id)
    assert stored.status is JobStatus.running
    assert stored.provider_calls == 1
    assert stored.lease_expires_at == 1060
    assert claim(ledger, stale, clock) is None  # the second delivery loses the compare-and-set
    assert ledger.load(job.id).provider_calls == 1


def test_transitions_outside_the_allowed_edges_are_refused():
    clock, ledger = fresh_ledger()
    job = new_job(ledger, clock)
    claim(ledger, job, clock)
    assert ledger.succeed(job, text="ok", citations=[], usage=job.usage)
    with pytest.raises(IllegalTransition):
        ledger.hand_back(job)  # succeeded is final
    with pytest.raises(InputError, match="only dead_lettered, failed or cancelled"):
        ledger.replay(job.id)
    assert ledger.load(job.id).status is JobStatus.succeeded


def test_leaving_running_ends_the_lease_and_keeps_the_error():
    clock, ledger = fresh_ledger()
    job = new_job(ledger, clock)
    claim(ledger, job, clock)
    error = JobError(error_class=ErrorClass.transient, message="boom", at=clock())
    assert ledger.hand_back(job, error)
    stored = ledger.load(job.id)
    assert stored.status is JobStatus.queued
    assert stored.lease_expires_at is None
    assert stored.error.message == "boom"


def test_a_saved_reply_is_reapplied_over_a_concurrent_write_but_never_over_a_finished_job():
    clock, ledger = fresh_ledger()
    job = new_job(ledger, clock)
    claim(ledger, job, clock)
    other = ledger.load(job.id)
    assert ledger.record(other, JobError(error_class=ErrorClass.transient, message="x"))  # someone wrote meanwhile
    assert ledger.save_reply(job, ProviderResult(text="answer"))
    assert ledger.load(job.id).reply.text == "answer"

    job2 = new_job(ledger, clock, "j2")
    claim(ledger, job2, clock)
    finisher = ledger.load("j2")
    assert ledger.fail(finisher, JobError(error_class=ErrorClass.permanent, message="refused"))
    assert not ledger.save_reply(job2, ProviderResult(text="late"))
    assert ledger.load("j2").reply is None
    assert ledger.load("j2").status is JobStatus.failed


def test_replay_resets_the_budget_and_a_job_that_keeps_changing_raises_conflict():
    clock, ledger = fresh_ledger()
    job = new_job(ledger, clock)
    claim(ledger, job, clock)
    assert ledger.dead_letter(job, "attempt budget exhausted")
    replayed = ledger.replay(job.id)
    assert replayed.status is JobStatus.queued
    assert replayed.provider_calls == 0
    assert replayed.finished_at is None

    class AlwaysChanged(MemoryJobStore):
        def update(self, job: Job, *, expected_version: int) -> bool:
            return False  # another writer wins every race

    busy = AlwaysChanged()
    busy_ledger = Ledger(busy, clock=clock)
    job = new_job(busy_ledger, clock)
    busy._rows[job.id] = job.model_copy(update={"status": JobStatus.failed}).model_dump_json()
    with pytest.raises(ConflictError, match="kept changing"):
        busy_ledger.replay(job.id)


def test_the_queue_dead_letter_leaves_leased_and_terminal_jobs_alone():
    clock, ledger = fresh_ledger()
    job = new_job(ledger, clock)
    claim(ledger, job, clock)
    assert ledger.dead_letter_by_queue(job.id, "dead-lettered by the queue") is None  # leased until 1060
    clock.t = 1061
    marked = ledger.dead_letter_by_queue(job.id, "dead-lettered by the queue")
    assert marked is not None
    assert marked.status is JobStatus.dead_lettered
    assert ledger.dead_letter_by_queue(job.id, "again") is None


# ---------------------------------------------------------------- attempt decisions


def plan():
    s = settings()
    return s, Router(s).plan("acme", JobRequest(prompt="q"), input_tokens=10)


def decision_for(exc: Exception, *, calls: int, time_left_s: float = 60.0, tried: set[str] | None = None):
    s, p = plan()
    c = classify(exc)
    fallback = a.typed_fallback(exc, c.error_class, p, tried or {"a"}, lambda name: name != "small")
    error = JobError(error_class=c.error_class, message=str(exc))
    return a.decide(c, error, calls=calls, gov=s.governance, fallback=fallback, time_left_s=time_left_s)


def test_a_rate_limit_takes_the_typed_fallback_while_budget_remains():
    d = decision_for(ProviderError("429", status_code=429), calls=1)
    assert isinstance(d, a.Fallback)
    assert d.decision.model == "b"
    assert isinstance(decision_for(ProviderError("429", status_code=429), calls=3), a.Exhausted)


def test_context_overflow_skips_fallbacks_that_do_not_fit_and_models_already_tried():
    d = decision_for(ProviderError("too long", status_code=400, context_overflow=True), calls=1)
    assert isinstance(d, a.Fallback)
    assert d.decision.model == "b"  # 'small' does not fit
    d = decision_for(ProviderError("too long", status_code=400, context_overflow=True), calls=1, tried={"a", "b"})
    assert isinstance(d, a.Failed)  # permanent, and no untried model fits


def test_permanent_errors_fail_and_transient_ones_retry_in_process_or_later():
    assert isinstance(decision_for(ProviderError("bad", status_code=400), calls=1), a.Failed)
    now = decision_for(ProviderError("oops", status_code=500), calls=1)
    assert isinstance(now, a.RetryNow)
    assert now.delay_s <= 2.0
    later = decision_for(ProviderError("oops", status_code=500), calls=1, time_left_s=1.0)
    assert isinstance(later, a.RetryLater)  # no time left in this invocation
    long_wait = decision_for(ProviderError("slow", status_code=500, headers={"retry-after": "20"}), calls=2)
    assert isinstance(long_wait, a.RetryLater)
    assert long_wait.delay_s == 20.0  # beyond in_process_wait_s
    assert isinstance(decision_for(ProviderError("oops", status_code=500), calls=3), a.Exhausted)


# ---------------------------------------------------------------- admission


JOB = Job(
    id="j1", tenant="acme", request=JobRequest(prompt="q"), request_hash="h", trace_id="t", created_at=0, updated_at=0
)


def admission() -> tuple[Settings, object, ManualClock, MemoryStateStore, Admission]:
    """(settings, route plan, clock, state store, admission) over in-memory state."""
    s, p = plan()
    clock = ManualClock(1000.0)
    state = MemoryStateStore(clock=clock)
    breaker = CircuitBreaker(state, s.governance.breaker, clock=clock)
    limiter = RateLimiter(state, clock=clock)
    governors = Governors(breaker, limiter, Budgets(state, clock=clock), Offload(state))
    adm = Admission(s, governors, MaxCalls(state), ProviderRegistry(s, EnvSecrets({})), clock=clock)
    return s, p, clock, state, adm


def test_admission_releases_its_slot_on_every_exit_even_an_exception():
    _s, p, clock, state, adm = admission()

    async def go() -> None:
        with pytest.raises(RuntimeError):
            async with adm.admit(p, p.primary, 10, deadline=clock() + 60, job=JOB) as ticket:
                assert isinstance(ticket, Ticket)
                assert ticket.decision.model == "a"
                assert len(state.get("cc:offline:a").value["holders"]) == 1
                raise RuntimeError("the call blew up")
        assert state.get("cc:offline:a").value["holders"] == {}
        async with adm.admit(p, p.primary, 10, deadline=clock() + 60, job=JOB) as first:
            assert isinstance(first, Ticket)
            async with adm.admit(p, p.primary, 10, deadline=clock() + 1.05, job=JOB) as second:
                assert isinstance(second, Deferral)
                assert "concurrency cap" in second.reason
        assert state.get("cc:offline:a").value["holders"] == {}

    asyncio.run(go())


def test_an_open_circuit_sends_the_call_to_the_circuit_open_fallback_or_defers():
    s, p, clock, _state, adm = admission()
    adm.breaker.record(adm.breaker.check(s.models["a"], probe_timeout_s=5), ErrorClass.transient)

    async def go() -> None:
        async with adm.admit(p, p.primary, 10, deadline=clock() + 60, job=JOB) as ticket:
            assert isinstance(ticket, Ticket)
            assert ticket.decision.model == "b"
            assert "open circuit" in ticket.decision.reason
            await ticket.report(None)
        adm.breaker.record(adm.breaker.check(s.models["b"], probe_timeout_s=5), ErrorClass.transient)
        async with adm.admit(p, p.primary, 10, deadline=clock() + 60, job=JOB) as ticket:
            assert isinstance(ticket, Deferral)
            assert "circuit open" in ticket.reason

    asyncio.run(go())


def test_a_probe_that_never_calls_is_abandoned_so_the_next_worker_may_probe():
    s, p, clock, _state, adm = admission()
    breaker = adm.breaker
    breaker.record(breaker.check(s.models["a"], probe_timeout_s=5), ErrorClass.transient)
    clock.t += s.governance.breaker.cooldown_s + 1  # the cooldown is over: the next check probes

    async def go() -> None:
        async with adm.admit(p, p.primary, 10, deadline=clock() + 60, job=JOB) as ticket:
            assert isinstance(ticket, Ticket)
            assert ticket.gate.kind == "probe"
        # never settled: abandoned on exit, so another worker becomes the probe at once
        clock.t += s.governance.breaker.cache_s + 0.01
        assert breaker.check(s.models["a"], probe_timeout_s=5).kind == "probe"

    asyncio.run(go())
