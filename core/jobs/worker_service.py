"""`WorkerService`: the API's use cases plus processing (`process`) and the operator's verbs, its stages
wired by `core.jobs.wiring` from the full `Settings`. The composition root (`core.bootstrap`) builds one
per process."""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

from core.chunks import ContextChunk
from core.config.worker import Settings
from core.jobs.outcome import Outcome
from core.jobs.prepare import Prepared
from core.jobs.service import ApiService
from core.jobs.thread_summary import Summaries
from core.jobs.wiring import Ports, Shared, wire
from core.models import Job, JobRequest
from core.observability.audit import AuditLog
from core.observability.metrics import Metrics
from core.ports import Delivery
from core.routing import Router
from core.safety.layer import Safety
from core.safety.moderation import Moderation


class WorkerService(ApiService):
    def __init__(
        self,
        settings: Settings,
        ports: Ports,
        *,
        router: Router | None = None,
        metrics: Metrics | None = None,
        audit: AuditLog | None = None,
        safety: Safety | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        p = ports
        super().__init__(
            settings, store=p.store, state=p.state, queue=p.queue, blobs=p.blobs, retriever=p.retriever,
            metrics=metrics, safety=safety, clock=clock,
        )  # fmt: skip
        self.settings: Settings = settings
        shared = Shared(self.ledger, self.outcomes, self.spend, self.metrics, self.streams, self.safety)
        stages = wire(settings, ports, shared, router=router, audit=audit, clock=clock)
        self.router, self.preparer, self.cache = stages.router, stages.preparer, stages.cache
        self.breaker, self.limiter = stages.breaker, stages.limiter  # for GET /v1/providers
        self.aftermath, self.workflows, self.lane = stages.aftermath, stages.workflows, stages.lane
        self.pipeline, self.operator, self.replays = stages.pipeline, stages.operator, stages.replays
        # a thread's summary is a job, submitted here and noted on its thread
        self.pipeline.summaries = Summaries(settings.threads, self.asubmit, self.threads, self.pipeline.store_io)
        self.pipeline.safety = self.safety
        load = partial(self.pipeline.store_io, self.ledger.load)
        endpoints = frozenset(n for n, m in settings.models.items() if m.api == "moderations")
        self.safety.moderation = Moderation(self.asubmit, load, endpoints)  # a classification is a job like any other

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
        return [
            {
                "model": name,
                "provider": m.provider,
                "model_id": m.model_id,
                "circuit": self.breaker.status(m),
                "rate": self.limiter.status(m),
            }
            for name, m in sorted(self.settings.models.items())
        ]
