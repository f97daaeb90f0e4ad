"""The batch lane: the same call made through the provider's batch API, at its discount, finalised by the
same path as an online reply.

A job on the lane (its request or its route says `lane: batch`, and the provider can batch) is claimed
like any attempt, with a lease as long as the provider's batch window, holds its discounted worst case
in its budgets, and joins the pending batch of its model on the state store (`batchq:MODEL`); its
message is acknowledged. `tick` (a loop in `alto serve`; `alto batch tick` for a scheduler) sends a
pending batch once it is `batch.flush_s` old or holds `batch.max_requests`, and polls the batches sent
(`batches:open`): each reply is saved and finalised exactly as an online one (a job that already has its
reply is skipped, so a result applied twice bills once); an errored or expired request goes back to the
online lane, its attempt spent, within the job's budget.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from core.config.worker import Settings
from core.governance.budget import Budgets, scopes, worst_case
from core.governance.state import mutate
from core.jobs.attempt import chat_request
from core.jobs.bills import Bills
from core.jobs.finalize import Finalizer
from core.jobs.ledger import Ledger
from core.jobs.offload import Offload
from core.jobs.outcome import Outcome
from core.jobs.prepare import Preparer
from core.jobs.replies import format_mismatch, unwrapped
from core.jobs.submit import send_job
from core.jobs.usage import billed
from core.logs import log_event
from core.models import BatchRef, ErrorClass, Job, JobError, JobStatus, ProviderResult, RouteDecision, Usage
from core.ports import SendQueue, StateStore
from core.providers.base import Batcher
from core.providers.registry import ProviderRegistry
from core.routing import RoutePlan
from core.structured import REJECTED_CHARS

OPEN = "batches:open"
TRIES = 20


class BatchLane:
    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        state: StateStore,
        queue: SendQueue,
        providers: ProviderRegistry,
        preparer: Preparer,
        finalizer: Finalizer,
        bills: Bills,
        budgets: Budgets,
        *,
        store_io: Offload,
        state_io: Offload,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.state = state  # the lane's own records: the pending and open batches
        self.queue = queue
        self.providers = providers
        self.preparer = preparer
        self.finalizer = finalizer
        self.bills = bills
        self.budgets = budgets
        self.store_io = store_io
        self.state_io = state_io
        self.clock = clock

    def wanted(self, job: Job, plan: RoutePlan, decision: RouteDecision) -> bool:
        if job.batch is not None and job.batch.state == "returned":
            return False  # the batch could not answer it: online now
        if job.request.lane != "batch" and plan.route.lane != "batch":
            return False  # most jobs: no provider lookup, no protocol check
        provider = self.providers.get(decision.provider)
        return isinstance(provider, Batcher) and getattr(provider, "batches", True)

    async def join(self, job: Job, decision: RouteDecision, assembled: Any, plan: RoutePlan) -> Outcome | None:
        """Claim the attempt and join the model's pending batch; None: it does not fit the budget (online
        admission then fails or defers it, saying which budget)."""
        if job.provider_calls >= self.settings.governance.max_attempts:
            return None  # no attempt left: the online path dead-letters it, saying so
        model = self.settings.models[decision.model]
        hold = f"{job.id}:{job.provider_calls + 1}"
        worst = worst_case(model, assembled.record.input_tokens, min(plan.route.max_tokens, model.max_output_tokens))
        within = self._scopes(job)
        wait = self.settings.batch.wait_s + self.settings.batch.flush_s
        if (
            within
            and await self.state_io(self.budgets.reserve, within, hold, worst * (1 - model.batch_discount), hold_s=wait)
            is not None
        ):
            return None
        attempt = await self.store_io(
            self.ledger.claim,
            job,
            decision,
            lease_until=self.clock() + wait,
            template=assembled.prompt.template,
            chunk_ids=[c.id for c in assembled.chunks],
            assembly=assembled.record,
        )
        if attempt is None or not await self.store_io(
            self.ledger.write, job, JobStatus.running, lambda j: setattr(j, "batch", BatchRef(model=decision.model))
        ):
            await self.state_io(self.budgets.release, within, hold)
            return Outcome("retry", delay_s=1.0, detail="job changed under us")
        await self.state_io(
            self._update,
            f"batchq:{decision.model}",
            lambda v: {"since": v.get("since") or self.clock(), "items": [*v.get("items", []), job.id]},
        )
        log_event("batch.joined", model=decision.model)
        return Outcome("ack", status=JobStatus.running, detail="joined the batch lane")

    async def tick(self) -> dict[str, int]:
        """Send the pending batches that are due, and apply the results of those that ended."""
        counts = {"submitted": 0, "applied": 0, "returned": 0}
        for name in self.settings.models:
            rec = await self.state_io(self.state.get, f"batchq:{name}")
            items = rec.value.get("items", []) if rec is not None else []
            due = (
                rec is not None
                and items
                and (
                    len(items) >= self.settings.batch.max_requests
                    or self.clock() - rec.value["since"] >= self.settings.batch.flush_s
                )
            )
            if due:
                counts["submitted"] += await self._flush(name)
        opened = await self.state_io(self.state.get, OPEN)
        for b in opened.value.get("batches", []) if opened is not None else []:
            applied, returned = await self._poll(b)
            counts["applied"] += applied
            counts["returned"] += returned
        return counts

    async def _flush(self, name: str) -> int:
        taken: list[str] = []

        def take(v: dict[str, Any]) -> dict[str, Any]:
            taken[:] = v.get("items", [])
            return {"since": None, "items": []}

        await self.state_io(self._update, f"batchq:{name}", take)
        jobs = [
            j
            for j in [await self.store_io(self.ledger.load, i) for i in taken]
            if j is not None and j.batch is not None and j.batch.state == "pending" and not j.status.terminal
        ]
        if not jobs:
            return 0
        model = self.settings.models[name]
        provider = self.providers.get(model.provider)
        assert isinstance(provider, Batcher)
        try:
            # retrieval and assembly in a thread: a pgvector query or a snapshot download must not stall the loop
            requests = await asyncio.to_thread(lambda: [(j.id, self._request(j, name)) for j in jobs])
            bid = await provider.submit_batch(requests)
        except Exception as e:  # the batch API refused it: these jobs run online instead
            log_event("batch.submit_failed", logging.WARNING, model=name, error=str(e)[:300])
            for j in jobs:
                await self._return(j, f"the batch API refused the batch: {e}")
            return 0
        await self.state_io(
            self._update,
            OPEN,
            lambda v: {"batches": [*v.get("batches", []), {"id": bid, "model": name, "items": [j.id for j in jobs]}]},
        )
        for j in jobs:
            await self.store_io(
                self.ledger.write,
                j,
                j.status,
                lambda x: setattr(x, "batch", BatchRef(model=name, state="submitted", id=bid)),
            )
        log_event("batch.submitted", model=name, batch_id=bid, requests=len(jobs))
        return len(jobs)

    def _request(self, job: Job, model_name: str) -> Any:
        """The call an online attempt would make: the same retrieval, route and assembly."""
        candidates = self.preparer.retrieve(job.tenant, job.request)
        prepared = self.preparer.prepare(job.tenant, job.request, candidates, job_id=job.id)
        route, model = prepared.plan.route, self.settings.models[model_name]
        assembled = (
            prepared.assembled
            if prepared.assembled.record.model == model_name
            else self.preparer.assemble_for(model_name, job.request.ask(), candidates, route)
        )  # prepare() built the first
        decision = job.route or prepared.decision
        return chat_request(decision, assembled, job, min(route.max_tokens, model.max_output_tokens), model)

    async def _poll(self, b: dict[str, Any]) -> tuple[int, int]:
        model = self.settings.models[b["model"]]
        provider = self.providers.get(model.provider)
        assert isinstance(provider, Batcher)
        try:
            results = await provider.batch_results(b["id"])
        except Exception as e:  # try again next tick; the jobs' leases outlast the provider's window
            log_event("batch.poll_failed", logging.WARNING, batch_id=b["id"], error=str(e)[:300])
            return 0, 0
        if results is None:
            return 0, 0
        applied = returned = 0
        for job_id in b["items"]:
            job = await self.store_io(self.ledger.load, job_id)
            if job is None or job.status.terminal or job.reply is not None:
                continue  # applied already (a second poll of the same results bills nothing)
            r = results.get(job_id)
            if isinstance(r, ProviderResult):
                r = unwrapped(job.request.response_format, r)
            if isinstance(r, ProviderResult) and (mismatch := format_mismatch(job, r)) is not None:
                returned += await self._rejected(job, r, b["model"], str(mismatch))
            elif isinstance(r, ProviderResult):
                applied += await self._apply(job, r, b["model"])
            else:
                returned += await self._return(job, str(r) if r is not None else "missing from the batch results")
        await self.state_io(
            self._update, OPEN, lambda v: {"batches": [x for x in v.get("batches", []) if x["id"] != b["id"]]}
        )
        log_event("batch.ended", batch_id=b["id"], applied=applied, returned=returned)
        return applied, returned

    async def _apply(self, job: Job, result: ProviderResult, model_name: str) -> int:
        attempt = job.attempts[-1]
        attempt.outcome, attempt.finished_at, attempt.usage = "succeeded", self.clock(), self._usage(result, model_name)
        result = self.finalizer.verdicts.kept(job, result)  # as an online reply: no stored copy holds a masked value
        if not await self.store_io(self.ledger.save_reply, job, result):
            return 0
        await self._bill(job, result, model_name)
        outcome = await self.finalizer.finalize(job)
        if outcome.action == "defer":  # its answer waits for its moderation: a delivery finishes it
            await self.store_io(send_job, self.queue, job, outcome.delay_s)
        return 1

    async def _rejected(self, job: Job, result: ProviderResult, model_name: str, why: str) -> int:
        """A reply off the job's response format: billed, then back to the online lane, whose next call is the
        corrective one (it quotes the reply, as for an online attempt)."""
        attempt = job.attempts[-1]
        attempt.usage, attempt.rejected_reply = self._usage(result, model_name), result.text[:REJECTED_CHARS]
        await self._bill(job, result, model_name)
        return await self._return(job, why, ErrorClass.malformed, release=False)

    def _usage(self, result: ProviderResult, model_name: str) -> Usage:
        model = self.settings.models[model_name]
        full = billed(result, model)
        return full.model_copy(update={"cost_usd": round(full.cost_usd * (1 - model.batch_discount), 10)})

    async def _bill(self, job: Job, result: ProviderResult, model_name: str) -> None:
        """The batch call's discounted cost against the budgets and in the usage ledger, with what it saved."""
        attempt, model = job.attempts[-1], self.settings.models[model_name]
        usage, full = self._usage(result, model_name), billed(result, model)
        await self.state_io(self.budgets.charge, self._scopes(job), f"{job.id}:{attempt.number}", usage.cost_usd)
        await self.bills.account(
            job, model_name, model, usage, lane="batch", saved_batch_usd=round(full.cost_usd - usage.cost_usd, 10)
        )

    async def _return(
        self, job: Job, reason: str, error_class: ErrorClass = ErrorClass.transient, *, release: bool = True
    ) -> int:
        """Back to the online lane: the attempt is spent (billed only when a reply came), the job queued again."""
        attempt = job.attempts[-1]
        attempt.outcome, attempt.finished_at = "error", self.clock()
        attempt.error_class, attempt.error = error_class, reason[:1000]
        if release:
            await self.state_io(self.budgets.release, self._scopes(job), f"{job.id}:{attempt.number}")

        def back(j: Job) -> None:
            if j.batch is not None:
                j.batch = j.batch.model_copy(update={"state": "returned"})

        back(job)
        if not await self.store_io(
            self.ledger.hand_back, job, JobError(error_class=error_class, message=reason[:1000])
        ):
            return 0
        send_job(self.queue, job)
        return 1

    def _scopes(self, job: Job) -> list[Any]:
        tenant = self.settings.tenants.get(job.tenant)
        return scopes(job.tenant, job.request.task, tenant.budgets if tenant else None, self.clock())

    def _update(self, key: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        mutate(self.state, key, lambda rec: (change(dict(rec.value) if rec is not None else {}), None), tries=TRIES)
