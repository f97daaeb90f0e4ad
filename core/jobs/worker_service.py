"""`WorkerService`: the API's use cases plus processing (`process`) and the operator's verbs, wired
from the full `Settings`. The composition root (`core.bootstrap`) builds one per process."""

from __future__ import annotations

import time
from typing import Any, Callable, Coroutine

from core.access import access_of
from core.chunks import ContextChunk
from core.config.worker import Settings
from core.governance.breaker import CircuitBreaker
from core.governance.budget import Budgets
from core.governance.cache import ResponseCache
from core.governance.ratelimit import RateLimiter
from core.jobs.admission import Admission, Governors
from core.jobs.aftermath import Aftermath
from core.jobs.attempt import Attempter
from core.jobs.batch_lane import BatchLane
from core.jobs.bills import Bills
from core.jobs.cached import CachedReplies
from core.jobs.callback import Callbacks
from core.jobs.finalize import Finalizer
from core.jobs.offload import Offload
from core.jobs.operator import Operator
from core.jobs.outcome import Outcome
from core.jobs.pipeline import Pipeline
from core.jobs.prepare import Prepared, Preparer
from core.jobs.replay import Replays
from core.jobs.service import ApiService
from core.jobs.verdict import Verdicts
from core.models import Job, JobRequest
from core.observability.audit import AuditLog
from core.observability.metrics import Metrics
from core.ports import BlobStore, Delivery, JobStore, Retriever, Secrets, SendQueue, StateStore
from core.providers.registry import ProviderRegistry
from core.routing import Router
from core.workflows.engine import Workflows
from core.workflows.max_calls import MaxCalls
from core.workflows.steps import WorkflowSteps


class WorkerService(ApiService):
    def __init__(self, settings: Settings, *, store: JobStore, state: StateStore, queue: SendQueue,
                 providers: ProviderRegistry, secrets: Secrets, blobs: BlobStore, retriever: Retriever | None = None,
                 router: Router | None = None, metrics: Metrics | None = None, audit: AuditLog | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(settings, store=store, state=state, queue=queue, blobs=blobs, retriever=retriever,
                         metrics=metrics, clock=clock)
        self.settings: Settings = settings
        gov = settings.governance
        store_io, state_io = Offload(store), Offload(state)
        self.router = router or Router(settings)
        self.breaker = CircuitBreaker(state, gov.breaker, clock=clock)
        self.limiter = RateLimiter(state, clock=clock)
        self.preparer = Preparer(settings, self.router, providers, retriever)
        budgets, calls = Budgets(state, clock=clock), MaxCalls(state)
        admission = Admission(settings, Governors(self.breaker, self.limiter, budgets, state_io), calls, providers,
                              clock=clock)
        steps = WorkflowSteps(self.ledger, settings.workflows)
        self.aftermath = Aftermath(self.outcomes, self.metrics, queue, access_of(store), steps=steps, audit=audit)
        bills, verdicts = Bills(self.spend, state_io=state_io), Verdicts(settings)
        finalizer = Finalizer(self.ledger, verdicts, self.preparer, self.aftermath, store_io=store_io, clock=clock)
        attempter = Attempter(settings, self.ledger, providers, self.router.fits, verdicts, bills, self.aftermath,
                              store_io=store_io, state_io=state_io, streams=self.streams, metrics=self.metrics,
                              clock=clock)
        self.cache = ResponseCache(state, gov.cache) if gov.cache.enabled else None
        replies = CachedReplies(self.cache, self.ledger, bills, finalizer, self.aftermath, store_io=store_io,
                                state_io=state_io) if self.cache is not None else None
        self.workflows = Workflows(settings, self.ledger, steps, queue, blobs, self.router, self.aftermath, calls,
                                   store_io=store_io, clock=clock)
        self.lane = BatchLane(settings, self.ledger, state, queue, providers, self.preparer, finalizer, bills, budgets,
                              store_io=store_io, state_io=state_io, clock=clock)
        callbacks = Callbacks(settings, self.ledger, queue, secrets, store_io=store_io, clock=clock)
        self.pipeline = Pipeline(settings, self.ledger, self.preparer, replies, admission, attempter, finalizer,
                                 self.aftermath, self.workflows, self.lane, callbacks, store_io=store_io,
                                 metrics=self.metrics, clock=clock)
        self.operator = Operator(settings, self.ledger, queue, aftermath=self.aftermath, clock=clock)
        self.replays = Replays(settings, self.ledger, queue, resume_workflow=self.workflows.replay)

    def process(self, delivery: Delivery, *, deadline: float | None = None) -> Coroutine[Any, Any, Outcome]:
        """Run one delivery to a decision. Never raises for job-level failures; the Outcome says what to do.
        (The pipeline's own coroutine, not one wrapping it: every await of a job resumes one frame fewer.)"""
        return self.pipeline.process(delivery, deadline=deadline)

    def prepare(self, tenant: str, request: JobRequest, candidates: list[ContextChunk]) -> Prepared:
        """What `process` would send for this request (`alto route explain`); raises NoRoute."""
        return self.preparer.prepare(tenant, request, candidates)

    async def batch_tick(self) -> dict[str, int]:
        """Send the batches that are due and apply the results of those that ended (the batch lane)."""
        return await self.lane.tick()

    def reconcile(self, *, older_than_s: float | None = None, limit: int = 500) -> dict[str, int]:
        return self.operator.reconcile(older_than_s=older_than_s, limit=limit)

    def dead_letter(self, delivery: Delivery) -> Job | None:
        return self.operator.dead_letter(delivery)

    def provider_state(self) -> list[dict[str, Any]]:
        """Every catalogued model's circuit and rate buckets (`GET /v1/providers`, the console)."""
        return [{"model": name, "provider": m.provider, "model_id": m.model_id, "circuit": self.breaker.status(m),
                 "rate": self.limiter.status(m)} for name, m in sorted(self.settings.models.items())]
