"""The response cache as a stage: serve a job from a reply another job paid for (no call, no attempt), and
keep an answered job's reply for the next identical request."""

from __future__ import annotations

from core.assembly import Assembled
from core.governance.cache import ResponseCache, cache_key
from core.jobs.aftermath import Aftermath
from core.jobs.bills import Bills
from core.jobs.finalize import Finalizer
from core.jobs.ledger import Ledger
from core.jobs.offload import Offload
from core.jobs.outcome import Outcome, raced
from core.jobs.prepare import Run
from core.logs import log_event
from core.models import Job, RouteDecision, Usage


class CachedReplies:
    def __init__(
        self,
        cache: ResponseCache,
        ledger: Ledger,
        bills: Bills,
        finalizer: Finalizer,
        aftermath: Aftermath,
        *,
        store_io: Offload,
        state_io: Offload,
    ) -> None:
        self.cache = cache
        self.ledger = ledger
        self.bills = bills  # a hit is on the usage ledger at $0, with what it saved
        self.finalizer = finalizer
        self.aftermath = aftermath  # the audit record of a job served from the cache
        self.store_io = store_io
        self.state_io = state_io

    async def serve(self, run: Run) -> Outcome | None:
        """The job answered from the cache, or None (a miss, or a request that opts out)."""
        if not run.job.request.cache:
            return None
        decision = run.prepared.decision
        assembled = await run.assemblies.get(decision)
        hit = await self.state_io(self.cache.get, key(run, decision, assembled))
        if hit is None:
            return None
        reply, source = hit
        reply = self.finalizer.verdicts.kept(run.job, reply)  # this job's policy checks the answer it is served
        if not await self.store_io(
            self.ledger.serve_cached,
            run.job,
            decision,
            reply,
            source,
            template=assembled.prompt.template,
            chunk_ids=[c.id for c in assembled.chunks],
            assembly=assembled.record,
        ):
            return raced()
        log_event("cache.hit", source_job=source, model=decision.model)
        paid = await self.store_io(self.ledger.load, source)
        await self.bills.account(
            run.job,
            decision.model,
            None,
            Usage(cached=True),
            saved_response_cache_usd=paid.usage.cost_usd if paid is not None else 0.0,
        )
        outcome = await self.finalizer.finalize(run.job, assembled.chunks)
        await self.aftermath.audit(run.job, system=assembled.prompt.system, user=assembled.prompt.user)
        return outcome

    async def keep(self, run: Run, job: Job) -> None:
        """An answered job's reply, for the next identical request (not one that was itself a hit)."""
        if not job.request.cache or job.route is None or job.reply is None or job.cached_from is not None:
            return
        assembled = await run.assemblies.get(job.route)
        await self.state_io(self.cache.put, key(run, job.route, assembled), job.reply, job.id)


def key(run: Run, decision: RouteDecision, assembled: Assembled) -> str:
    return cache_key(
        run.job.tenant,
        run.job.request,
        decision,
        run.prepared.plan.route.max_tokens,
        assembled.prompt.template,
        assembled.chunks,
    )
