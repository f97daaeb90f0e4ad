"""`WorkerService`: the API's use cases plus processing (`process`) and the operator's verbs, wired
from the full `Settings`. The composition root (`core.bootstrap`) builds one per process."""

from __future__ import annotations

import time
from typing import Any, Callable, Coroutine

from core.chunks import ContextChunk
from core.config.worker import Settings
from core.governance.breaker import CircuitBreaker
from core.governance.budget import Budgets
from core.governance.cache import ResponseCache
from core.governance.ledger import UsageLedger
from core.governance.ratelimit import RateLimiter
from core.jobs.admission import Admission
from core.jobs.attempt import Attempter
from core.jobs.batch_lane import BatchLane
from core.jobs.callback import Callbacks
from core.jobs.finalize import Finalizer
from core.jobs.offload import Offload
from core.jobs.operator import Operator
from core.jobs.outcome import Outcome
from core.jobs.pipeline import Pipeline
from core.jobs.prepare import Prepared, Preparer
from core.jobs.service import ApiService
from core.models import Job, JobRequest
from core.observability.audit import AuditLog
from core.observability.metrics import Metrics
from core.ports import BlobStore, Delivery, JobStore, Retriever, Secrets, SendQueue, StateStore
from core.providers.registry import ProviderRegistry
from core.routing import Router
from core.workflows.budget import CallBudget
from core.workflows.engine import Workflows


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
        self.cache = ResponseCache(state, gov.cache) if gov.cache.enabled else None
        self.preparer = Preparer(settings, self.router, providers, retriever)
        admission = Admission(settings, self.breaker, self.limiter, providers, Budgets(state, clock=clock),
                              state_io=state_io, clock=clock)
        self.spend = UsageLedger(state, clock=clock)
        callbacks = Callbacks(settings, self.ledger, queue, secrets, store_io=store_io, clock=clock)
        calls = CallBudget(state)
        self.workflows = Workflows(settings, self.ledger, queue, blobs, self.router, store_io=store_io,
                                   on_terminal=callbacks.enqueue, calls_reset=calls.reset, clock=clock)
        finalizer = Finalizer(settings, self.ledger, self.preparer, self.workflows.follow_up, store_io=store_io, clock=clock)
        attempter = Attempter(settings, self.ledger, providers, self.router.fits, store_io=store_io,
                              streams=self.streams, state_io=state_io, spend=self.spend, verdict=finalizer.verdict,
                              metrics=self.metrics, clock=clock)
        self.lane = BatchLane(settings, self.ledger, state, queue, providers, self.preparer, attempter, finalizer,
                              store_io=store_io, state_io=state_io, clock=clock)
        self.pipeline = Pipeline(settings, self.ledger, self.preparer, admission, attempter, finalizer, callbacks,
                                 self.cache, self.workflows, calls, self.lane, store_io=store_io, state_io=state_io,
                                 metrics=self.metrics, audit=audit, clock=clock)
        self.operator = Operator(settings, self.ledger, queue, on_terminal=self.workflows.settled,
                                 replay_workflow=self.workflows.replay, clock=clock)

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

    def replay(self, job_id: str, *, enqueue: bool = True) -> Job:
        return self.operator.replay(job_id, enqueue=enqueue)

    def provider_state(self) -> list[dict[str, Any]]:
        """Every catalogued model's circuit and rate buckets (`GET /v1/providers`, the console)."""
        return [{"model": name, "provider": m.provider, "model_id": m.model_id, "circuit": self.breaker.status(m),
                 "rate": self.limiter.status(m)} for name, m in sorted(self.settings.models.items())]
