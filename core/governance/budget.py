"""Spend budgets as reservations on the state store, shared by every worker of every runtime.

One record per tenant, scope (all of the tenant's jobs, or one task's) and UTC period:
`budget:TENANT:SCOPE:PERIOD` = `{"spent": USD, "holds": {HOLD: [USD, expires_at]}}`. Before a call,
admission reserves its worst case (counted input x input price + max_tokens x output price) in every
budget that applies, each with one compare-and-set that admits it only if spent + holds + it fit the limit;
the reply settles the hold to the real cost; a call that was not billed releases it; a worker that died
mid-call leaves a hold that expires with its lease. So concurrent calls can never spend past a limit.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from core.config.budgets import BudgetConfig, SpendLimits
from core.governance.state import mutate
from core.ports import StateRecord, StateStore

if TYPE_CHECKING:  # the model catalog is loaded only where calls are priced (and a budgeted submit)
    from core.config.worker import ModelConfig, Settings
    from core.models import JobRequest

TRIES = 20
KEEP_S = 40 * 86400  # a period's record outlives it, for reports


class Scope(NamedTuple):
    """One budget that applies to a call: its name (for messages), limit, record key and reset time."""

    name: str
    limit: float
    key: str
    resets_at: float


class Refusal(NamedTuple):
    scope: Scope
    spent: float
    held: float

    def message(self) -> str:
        reset = dt.datetime.fromtimestamp(self.scope.resets_at, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        return (
            f"budget_exhausted: the {self.scope.name} budget of {usd(self.scope.limit)} has {usd(self.spent)} spent "
            f"and {usd(self.held)} reserved by calls in flight; it resets at {reset}"
        )


def usd(x: float) -> str:
    """$50, $0.036, $0.000123: as many decimals as the amount needs, up to micro-dollars."""
    return "$" + (f"{x:,.6f}".rstrip("0").rstrip(".") or "0")


def periods(now: float) -> dict[str, tuple[str, float]]:
    """The current UTC day and month: their record suffix and when each ends."""
    t = dt.datetime.fromtimestamp(now, dt.UTC)
    day_end = dt.datetime(t.year, t.month, t.day, tzinfo=dt.UTC) + dt.timedelta(days=1)
    month_end = dt.datetime(t.year + (t.month == 12), t.month % 12 + 1, 1, tzinfo=dt.UTC)
    return {
        "daily": (t.strftime("d%Y-%m-%d"), day_end.timestamp()),
        "monthly": (t.strftime("m%Y-%m"), month_end.timestamp()),
    }


def scopes(tenant: str, task: str | None, config: BudgetConfig | None, now: float) -> list[Scope]:
    """Every budget a call of this tenant and task counts against, now."""
    if config is None:
        return []
    p = periods(now)
    out: list[Scope] = []

    def add(limits: SpendLimits, scope: str, label: str) -> None:
        for kind, limit in (("daily", limits.daily_usd), ("monthly", limits.monthly_usd)):
            if limit is not None:
                suffix, ends = p[kind]
                out.append(Scope(f"{label}{kind}", limit, f"budget:{tenant}:{scope}:{suffix}", ends))

    add(config, "all", f"tenant '{tenant}' ")
    if task is not None and task in config.tasks:
        add(config.tasks[task], f"task:{task}", f"tenant '{tenant}' task '{task}' ")
    return out


def worst_case(model: ModelConfig, counted_input: int, max_output: int) -> float:
    """The most one call can cost: its input as the provider may count it (our count plus the model's
    margin) at the dearer of the input and cache-write prices, and its whole output allowance."""
    worst_in = math.ceil(counted_input * (1 + model.token_margin))
    if (model.cache_write_per_mtok or 0) > model.input_per_mtok:
        return model.cost(0, max_output, cache_write_tokens=worst_in)
    return model.cost(worst_in, max_output)


def cheapest_call(settings: Settings, tenant: str, request: JobRequest) -> float | None:
    """The least any call this request may make can be held for: the cheapest worst case among the models its
    route allows (the chosen target, its equivalent deployments and every fallback), with the prompt's length
    as a lower bound on its input. None when nothing routes it (the worker says why)."""
    from core.routing import NoRoute, Router

    # fewer tokens than any tokenizer counts: never refuses a payable call
    estimate = sum(len(t) for t in request.ask().texts()) // 4
    try:
        plan = Router(settings).plan(tenant, request, input_tokens=estimate)
    except NoRoute:
        return None
    candidates = [plan.primary, *plan.siblings, *(d for chain in plan.fallbacks.values() for d in chain)]
    return min(
        worst_case(
            settings.models[d.model], estimate, min(plan.route.max_tokens, settings.models[d.model].max_output_tokens)
        )
        for d in candidates
    )


class Budgets:
    def __init__(self, state: StateStore, *, clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.clock = clock

    def reserve(self, within: list[Scope], hold: str, amount: float, *, hold_s: float) -> Refusal | None:
        """Hold `amount` in every scope, or in none (the first that can't take it is the refusal)."""
        taken: list[Scope] = []
        for scope in within:

            def held(v: dict[str, Any], s: Scope = scope) -> Any:
                return _hold(v, s, hold, amount, self.clock() + hold_s, self.clock())

            refused = self._update(scope, held)
            if refused is not None:
                self.release(taken, hold)
                return refused
            taken.append(scope)
        return None

    def charge(self, within: list[Scope], hold: str, cost: float) -> None:
        """The call's real cost replaces its hold (a call that billed nothing: cost 0 releases it)."""
        for scope in within:
            self._update(scope, lambda v: _charged(v, hold, cost))

    def release(self, within: list[Scope], hold: str) -> None:
        self.charge(within, hold, 0.0)

    def cannot_pay(self, within: list[Scope], amount: float) -> Refusal | None:
        """The first budget whose unspent remainder is less than `amount` (reservations in flight left out:
        they settle to what the calls really cost)."""
        for scope in within:
            rec = self.state.get(scope.key)
            spent = float(rec.value["spent"]) if rec is not None else 0.0
            if spent + amount > scope.limit + 1e-12:
                return Refusal(scope, spent, 0.0)
        return None

    def exhausted(self, within: list[Scope]) -> Refusal | None:
        """The first budget already spent to its limit (a submit gets 429 then)."""
        for scope in within:
            rec = self.state.get(scope.key)
            spent = float(rec.value["spent"]) if rec is not None else 0.0
            if spent >= scope.limit:
                return Refusal(scope, spent, 0.0)
        return None

    def _update(self, scope: Scope, change: Callable[[dict[str, Any]], Refusal | dict[str, Any]]) -> Refusal | None:
        def step(rec: StateRecord | None) -> tuple[dict[str, Any] | None, Refusal | None]:
            new = change(rec.value if rec is not None else {"spent": 0.0, "holds": {}})
            return (None, new) if isinstance(new, Refusal) else (new, None)

        return mutate(self.state, scope.key, step, ttl_s=max(1.0, scope.resets_at - self.clock()) + KEEP_S, tries=TRIES)


def _live(value: dict[str, Any], now: float) -> dict[str, list[float]]:
    return {h: v for h, v in value.get("holds", {}).items() if v[1] > now}


def _hold(
    value: dict[str, Any], scope: Scope, hold: str, amount: float, expires: float, now: float
) -> Refusal | dict[str, Any]:
    holds = _live(value, now)
    held = sum(a for h, (a, _) in holds.items() if h != hold)
    spent = float(value.get("spent", 0.0))
    if spent + held + amount > scope.limit + 1e-12:
        return Refusal(scope, spent, held)
    holds[hold] = [amount, expires]
    return {"spent": spent, "holds": holds}


def _charged(value: dict[str, Any], hold: str, cost: float) -> dict[str, Any]:
    holds = dict(value.get("holds", {}))
    holds.pop(hold, None)
    return {"spent": round(float(value.get("spent", 0.0)) + cost, 10), "holds": holds}
