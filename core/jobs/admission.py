"""Admission: what a job must hold before it may call a provider, as one context manager.

In order: a deployment whose circuit lets it through (else a `circuit_open` fallback, else a deferral),
a concurrency slot, rate tokens, then the call's worst-case cost held in the tenant's spend budgets. On
exit the slot is always released, a breaker gate the attempt never settled (no call made, a cancelled
call) is abandoned and an unsettled budget hold released, so no path can leak any of them. Nothing here
spends an attempt: a job that is not admitted is deferred with its attempt budget intact.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import NamedTuple

from core.config.worker import ModelConfig, Settings
from core.errors import Contended
from core.governance.breaker import CircuitBreaker, Gate
from core.governance.budget import Budgets, Scope, scopes, worst_case
from core.governance.ratelimit import Deferral, RateLimiter, Reservation
from core.jobs.offload import Offload
from core.logs import log_event
from core.models import ErrorClass, Job, ProviderResult, RouteDecision
from core.providers.registry import ProviderRegistry
from core.routing import RoutePlan
from core.workflows.max_calls import MaxCalls

MIN_CALL_S = 1.0  # don't start a provider call with less than this left before the deadline
SLOT_POLL_S = 0.1  # how often a full concurrency cap is re-checked while the job may still wait in process


class OverBudget(NamedTuple):
    """The call does not fit a spend budget whose policy is `fail`."""

    message: str


class Held(NamedTuple):
    scopes: list[Scope]
    hold: str


class Governors(NamedTuple):
    """The shared state an admitted call is governed by, reached through `state_io`."""

    breaker: CircuitBreaker
    limiter: RateLimiter
    budgets: Budgets
    state_io: Offload


class Ticket:
    """What an admitted call holds: the deployment it may call and the governance it must settle."""

    def __init__(
        self,
        decision: RouteDecision,
        model: ModelConfig,
        gate: Gate,
        reservation: Reservation,
        governors: Governors,
        held: Held | None = None,
    ) -> None:
        self.decision = decision
        self.model = model
        self.gate = gate
        self.reservation = reservation
        self.reported = False  # whether the breaker was told how the call went
        self.held = held  # the budget hold, until the call's cost settles it
        self.governors = governors

    async def charge(self, cost_usd: float) -> None:
        """Replace the budget hold by what the call was billed (0 for a call that billed nothing)."""
        held, self.held = self.held, None
        if held is not None:
            g = self.governors
            await g.state_io(g.budgets.charge, held.scopes, held.hold, cost_usd)

    async def report(self, error_class: ErrorClass | None) -> None:
        """Tell the breaker how the call went (None: it succeeded). Advisory: a lost write skews it briefly."""
        self.reported = True
        g = self.governors
        if not g.breaker.records(self.gate, error_class):
            return  # a success on a circuit this worker just saw closed and clean: nothing to write
        try:
            await g.state_io(g.breaker.record, self.gate, error_class)
        except Contended as e:
            log_event("breaker.record_skipped", logging.WARNING, error=str(e))

    async def correct_tokens(self, result: ProviderResult) -> None:
        """Charge the reply's real token counts in place of the reservation's estimate."""
        g = self.governors
        if not g.limiter.rated(self.model):
            return
        try:
            await g.state_io(
                g.limiter.correct,
                self.model,
                self.reservation,
                input_tokens=result.input_tokens,
                output_tokens=result.output_tokens,
            )
        except Contended as e:  # the reply is safe; a missed correction only skews the bucket briefly
            log_event("ratelimit.settle_skipped", logging.WARNING, error=str(e))


class Admission:
    def __init__(
        self,
        settings: Settings,
        governors: Governors,
        calls: MaxCalls,
        providers: ProviderRegistry,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.governors = governors
        self.breaker, self.limiter, self.budgets, self.state_io = governors
        self.calls = calls  # a workflow's max_calls, taken once the call is otherwise admitted
        self.providers = providers  # the provider's client is built before a rate slot is taken
        self.clock = clock

    @asynccontextmanager
    async def admit(
        self,
        plan: RoutePlan,
        current: RouteDecision,
        est_input: int,
        deadline: float,
        job: Job,
        counted_input: int | None = None,
    ) -> AsyncIterator[Ticket | Deferral | OverBudget]:
        """Yield a Ticket, or the Deferral that says why the job must wait. Raises Contended when the
        shared state is too busy to decide (the caller defers)."""
        gated = await self._gate(plan, current)
        if isinstance(gated, Deferral):
            yield gated
            return
        decision, model, gate = gated
        slot: str | None = None
        ticket: Ticket | None = None
        held: Held | None = None
        try:
            patience = max(0.0, min(self.settings.governance.in_process_wait_s, deadline - self.clock() - MIN_CALL_S))
            slot, waited = await self._slot(model, patience)
            if waited is None:
                yield Deferral(delay_s=max(1.0, SLOT_POLL_S * 10), reason=f"concurrency cap on {decision.model}")
                return
            budget = await self._hold(
                job, model, est_input if counted_input is None else counted_input, plan
            )  # before rate tokens: a refusal spends none
            if isinstance(budget, (Deferral, OverBudget)):
                yield budget
                return
            held = budget
            reserved = await self._reserve(model, est_input, max(0.0, patience - waited))
            if isinstance(reserved, Deferral):
                yield reserved
                return
            if (
                (ref := job.parent)
                and ref.max_calls
                and not await self.state_io(self.calls.take, ref.parent_id, ref.max_calls)
            ):
                yield OverBudget(
                    f"workflow {ref.parent_id} used up its max_calls ({ref.max_calls}); raise it or shorten the input"
                )
                return
            if reserved.wait_s > 0:
                await asyncio.sleep(reserved.wait_s)
            ticket = Ticket(decision, model, gate, reserved, self.governors, held)
            yield ticket
        finally:
            if held is not None and (ticket is None or ticket.held is not None):  # no call, or one never settled
                await self.state_io(self.budgets.release, held.scopes, held.hold)
            if slot is not None and self.limiter.capped(model):
                await self.state_io(self.limiter.release_slot, model, slot)
            if (ticket is None or not ticket.reported) and gate.kind == "probe":  # abandon only gives back probes
                await self.state_io(self.breaker.abandon, gate)

    async def _gate(
        self, plan: RoutePlan, current: RouteDecision
    ) -> tuple[RouteDecision, ModelConfig, Gate] | Deferral:
        """The first deployment of [current, the route's equivalent deployments, circuit_open fallbacks...] whose
        circuit is not open: a broken deployment holds up only the jobs that have nowhere else to go."""
        gov = self.settings.governance
        chain = [current] + [
            d for d in plan.siblings + plan.fallbacks.get("circuit_open", []) if d.model != current.model
        ]
        retry_in: float | None = None
        for decision in chain:
            model = self.settings.models[decision.model]
            cached = self.breaker.cached_gate(model)
            gate = (
                cached
                if cached is not None
                else await self.state_io(self.breaker.check, model, probe_timeout_s=gov.lease_s)
            )
            if gate.kind != "open":
                break
            retry_in = gate.retry_in_s if retry_in is None else min(retry_in, gate.retry_in_s)
        else:
            return Deferral(delay_s=retry_in or gov.breaker.cooldown_s, reason=f"circuit open on {current.model}")
        if decision is not current:
            decision = decision.model_copy(update={"reason": f"{decision.reason}: {current.model} has an open circuit"})
        if gate.kind == "probe":
            decision = decision.model_copy(update={"reason": decision.reason + " (half-open probe)"})
        # build the client (a cold SDK import blocks the loop ~1 s) before taking a rate slot, or the
        # requests reserved meanwhile would reach the provider bunched together
        try:
            self.providers.get(decision.provider)
        except BaseException:  # e.g. its secret is not set: give the probe back before the caller fails the job
            await self.state_io(self.breaker.abandon, gate)
            raise
        return decision, model, gate

    async def _hold(
        self, job: Job, model: ModelConfig, counted: int, plan: RoutePlan
    ) -> Held | Deferral | OverBudget | None:
        """The call's worst case held in every budget of the tenant (and task); None when it has none."""
        tenant = self.settings.tenants.get(job.tenant)
        config = tenant.budgets if tenant is not None else None
        within = scopes(job.tenant, job.request.task, config, self.clock())
        if not within or config is None:
            return None
        worst = worst_case(model, counted, min(plan.route.max_tokens, model.max_output_tokens))
        hold = f"{job.id}:{job.provider_calls + 1}"
        refused = await self.state_io(
            self.budgets.reserve, within, hold, worst, hold_s=self.settings.governance.lease_s
        )
        if refused is None:
            return Held(within, hold)
        log_event(
            "budget.exhausted",
            logging.WARNING,
            budget=refused.scope.name,
            limit_usd=refused.scope.limit,
            spent_usd=round(refused.spent, 6),
            call_usd=round(worst, 6),
            policy=config.on_exhausted,
        )
        if config.on_exhausted == "defer":
            return Deferral(delay_s=max(1.0, refused.scope.resets_at - self.clock()), reason=refused.message())
        return OverBudget(refused.message())

    async def _reserve(self, model: ModelConfig, est_input: int, max_wait_s: float) -> Reservation | Deferral:
        """Rate tokens; a model with no rates gets its free reservation without a trip to the state store."""
        if not self.limiter.rated(model):
            return self.limiter.reserve(model, input_tokens=est_input, max_wait_s=max_wait_s)
        return await self.state_io(self.limiter.reserve, model, input_tokens=est_input, max_wait_s=max_wait_s)

    async def _slot(self, model: ModelConfig, patience: float) -> tuple[str | None, float | None]:
        """(slot token, seconds waited), or (None, None) when the cap stayed full past `patience`."""
        if not self.limiter.capped(model):
            return "unlimited", 0.0
        hold = self.settings.governance.lease_s
        waited = 0.0
        while (slot := await self.state_io(self.limiter.acquire_slot, model, hold_s=hold)) is None:
            if waited + SLOT_POLL_S > patience:
                return None, None
            await asyncio.sleep(SLOT_POLL_S)
            waited += SLOT_POLL_S
        return slot, waited
