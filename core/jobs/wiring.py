"""The worker's lifecycle wired from its ports: each stage given exactly the collaborators it owns.

Part of the composition root: `core.bootstrap` builds a `WorkerService`, whose constructor hands its ports
and the API side's parts (the ledger, the outcome and usage ledgers, metrics, the stream log) to `wire`.
Read a stage's constructor to know what it may touch; read this module to know who gave it what.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

from core.access import access_of
from core.config.worker import Settings
from core.governance.breaker import CircuitBreaker
from core.governance.budget import Budgets
from core.governance.cache import ResponseCache
from core.governance.outcomes import OutcomeLedger
from core.governance.ratelimit import RateLimiter
from core.governance.spend import UsageLedger
from core.jobs.admission import Admission, Governors
from core.jobs.aftermath import Aftermath
from core.jobs.attempt import Attempter
from core.jobs.batch_lane import BatchLane
from core.jobs.bills import Bills
from core.jobs.cached import CachedReplies
from core.jobs.callback import Callbacks
from core.jobs.finalize import Finalizer
from core.jobs.ledger import Ledger
from core.jobs.offload import Offload
from core.jobs.operator import Operator
from core.jobs.pipeline import Pipeline
from core.jobs.prepare import Preparer
from core.jobs.replay import Replays
from core.jobs.threads import Threads
from core.jobs.verdict import Verdicts
from core.observability.audit import AuditLog
from core.observability.metrics import Metrics
from core.ports import BlobStore, JobStore, Retriever, Secrets, SendQueue, StateStore
from core.providers.registry import ProviderRegistry
from core.routing import Router
from core.safety.layer import Safety
from core.streaming.log import StreamLog
from core.workflows.engine import Workflows
from core.workflows.max_calls import MaxCalls
from core.workflows.steps import WorkflowSteps


class Ports(NamedTuple):
    """What a worker process reaches the world through."""

    store: JobStore
    state: StateStore
    queue: SendQueue
    blobs: BlobStore
    secrets: Secrets
    providers: ProviderRegistry
    retriever: Retriever | None


class Shared(NamedTuple):
    """What the API side of the service already made, that the worker's stages share."""

    ledger: Ledger
    outcomes: OutcomeLedger
    spend: UsageLedger
    metrics: Metrics
    streams: StreamLog
    safety: Safety


class Stages(NamedTuple):
    """The worker's stages, and the governance state `GET /v1/providers` reports."""

    router: Router
    breaker: CircuitBreaker
    limiter: RateLimiter
    preparer: Preparer
    cache: ResponseCache | None
    aftermath: Aftermath
    workflows: Workflows
    lane: BatchLane
    pipeline: Pipeline
    operator: Operator
    replays: Replays


class _Io(NamedTuple):
    store: Offload
    state: Offload
    clock: Callable[[], float]


class _Answering(NamedTuple):
    finalizer: Finalizer
    attempter: Attempter
    replies: CachedReplies | None
    bills: Bills


def wire(
    settings: Settings,
    ports: Ports,
    shared: Shared,
    *,
    router: Router | None = None,
    audit: AuditLog | None = None,
    clock: Callable[[], float] = time.time,
) -> Stages:
    io = _Io(Offload(ports.store), Offload(ports.state), clock)
    router = router or Router(settings)
    governors = _governors(settings, ports.state, io)
    calls = MaxCalls(ports.state)
    preparer = Preparer(settings, router, ports.providers, ports.retriever)
    steps = WorkflowSteps(shared.ledger, settings.workflows)
    threads = Threads(ports.state, ports.store, clock)
    aftermath = Aftermath(
        shared.outcomes, shared.metrics, ports.queue, access_of(ports.store), steps=steps, audit=audit, threads=threads
    )
    answering = _answering(settings, ports, shared, io, router, preparer, aftermath)
    workflows = Workflows(
        settings,
        shared.ledger,
        steps,
        ports.queue,
        ports.blobs,
        router,
        aftermath,
        calls,
        store_io=io.store,
        safety=shared.safety,
        clock=clock,
    )
    lane = BatchLane(
        settings, shared.ledger, ports.state, ports.queue, ports.providers, preparer, answering.finalizer,
        answering.bills, governors.budgets, store_io=io.store, state_io=io.state, clock=clock,
    )  # fmt: skip
    pipeline = Pipeline(
        settings, shared.ledger, preparer, answering.replies,
        Admission(settings, governors, calls, ports.providers, clock=clock),
        answering.attempter, answering.finalizer, aftermath, workflows, lane,
        Callbacks(settings, shared.ledger, ports.queue, ports.secrets, store_io=io.store, clock=clock),
        store_io=io.store, metrics=shared.metrics, threads=threads, blobs=ports.blobs, clock=clock,
    )  # fmt: skip
    operator = Operator(settings, shared.ledger, ports.queue, aftermath=aftermath, clock=clock)
    replays = Replays(settings, shared.ledger, ports.queue, resume_workflow=workflows.replay)
    cache = answering.replies.cache if answering.replies is not None else None
    return Stages(
        router, governors.breaker, governors.limiter, preparer, cache, aftermath, workflows, lane, pipeline, operator,
        replays,
    )  # fmt: skip


def _governors(settings: Settings, state: StateStore, io: _Io) -> Governors:
    breaker = CircuitBreaker(state, settings.governance.breaker, clock=io.clock)
    return Governors(breaker, RateLimiter(state, clock=io.clock), Budgets(state, clock=io.clock), io.state)


def _answering(
    settings: Settings, ports: Ports, shared: Shared, io: _Io, router: Router, preparer: Preparer, aftermath: Aftermath
) -> _Answering:
    """The stages that turn a provider's reply into a job's result: the attempt, the finalizer, the cache."""
    bills, verdicts = Bills(shared.spend, state_io=io.state), Verdicts(settings, shared.safety)
    finalizer = Finalizer(shared.ledger, verdicts, preparer, aftermath, store_io=io.store, clock=io.clock)
    attempter = Attempter(
        settings, shared.ledger, ports.providers, router.fits, verdicts, bills, aftermath,
        store_io=io.store, state_io=io.state, streams=shared.streams, metrics=shared.metrics, clock=io.clock,
    )  # fmt: skip
    replies = None
    if settings.governance.cache.enabled:
        cache = ResponseCache(ports.state, settings.governance.cache)
        replies = CachedReplies(cache, shared.ledger, bills, finalizer, aftermath, store_io=io.store, state_io=io.state)
    return _Answering(finalizer, attempter, replies, bills)
