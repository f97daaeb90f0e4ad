"""Routing: configuration decides which model and provider serve a request.

Rules are tried in order and the first whose match holds, and whose model the tenant's policy
allows, wins; the default route comes last. A route names one model, or several equivalent
deployments balanced by weight (chosen per job, so redeliveries stay on the same one), plus typed
fallback chains. Fallbacks the tenant may not use are dropped. Nothing here calls anything:
`alto route explain` shows exactly what `process` will do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from core.config.safety import PolicyConfig
from core.config.worker import FALLBACK_KINDS, MatchConfig, ModelConfig, RouteConfig, RuleConfig, Settings
from core.errors import NoRoute
from core.models import JobRequest, RouteDecision
from core.safety.moderation import TASK_PREFIX as MODERATION_TASK
from core.safety.moderation import models, task_of

__all__ = ["NoRoute", "RoutePlan", "Router"]


@dataclass
class RoutePlan:
    rule: str
    route: RouteConfig
    primary: RouteDecision
    fallbacks: dict[str, list[RouteDecision]]
    notes: list[str] = field(default_factory=list)  # rules skipped and why, fallbacks dropped by policy
    siblings: list[RouteDecision] = field(default_factory=list)  # the route's other weighted targets the tenant may use


class Router:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._rules: tuple[object, object, list[RuleConfig]] = (None, None, [])  # (made from these rules, default, ...)
        self._moderation = moderation_rules(settings)

    def rules(self) -> list[RuleConfig]:
        """The configured rules, then the default route as a rule (validated once, not once per job)."""
        routing = self.settings.routing
        if self._rules[0] is not routing.rules or self._rules[1] is not routing.default:
            self._rules = (
                routing.rules,
                routing.default,
                [*self._moderation, *list(routing.rules), RuleConfig(name="default", route=routing.default)],
            )
        return self._rules[2]

    # ------------------------------------------------------------------ policy

    def denied(self, tenant: str, name: str, task: str | None = None) -> str | None:
        """Why the tenant's data may not go to model `name`, or None if it may: its `policy`, then the `reach` of
        the safety policy its jobs of `task` run under. Every model a plan holds passes this, fallbacks included,
        so neither the breaker nor the batch lane can send a job anywhere else."""
        t = self.settings.tenants.get(tenant)
        safety = self.settings.safety
        chosen = safety.choose(t.safety if t is not None else None, task)
        reach = [("tenant policy", t.policy)] if t is not None else []
        if chosen is not None:
            reach.append((f"safety policy '{chosen}'", safety.resolved(chosen).reach))
        for who, pol in reach:
            if (why := self._outside(pol, name)) is not None:
                return f"{who} does not allow {why}"
        return None

    def _outside(self, pol: PolicyConfig, name: str) -> str | None:
        model = self.settings.models[name]
        if pol.allowed_providers is not None and model.provider not in pol.allowed_providers:
            return f"provider '{model.provider}' (allowed: {', '.join(pol.allowed_providers)})"
        if pol.allowed_models is not None and not {name, model.model_id} & set(pol.allowed_models):
            return f"model '{name}'"
        if pol.allowed_regions is not None:
            region = model.region or self.settings.providers[model.provider].region
            if region not in pol.allowed_regions:
                return f"region '{region or 'unspecified'}' (model '{name}')"
        return None

    # ------------------------------------------------------------------ planning

    def plan(self, tenant: str, request: JobRequest, *, input_tokens: int, job_id: str = "") -> RoutePlan:
        notes: list[str] = []
        seeing = bool(request.messages) and bool(request.images())

        def refused(name: str) -> str | None:  # the tenant's policy, then the request's images
            if (why := self.denied(tenant, name, request.task)) is not None:
                return why
            if seeing and not self.settings.models[name].vision:
                return f"model '{name}' does not read images (set models.{name}.vision: true if it does)"
            return None

        # a classification runs on the model its policy names, or not at all: never on the next rule's
        rules = self._moderation if request.task and request.task.startswith(MODERATION_TASK) else self.rules()
        for rule in rules:
            why_not = self._mismatch(rule, tenant, request, input_tokens)
            if why_not:
                if rule.name != "default":
                    notes.append(f"rule '{rule.name}' skipped: {why_not}")
                continue
            allowed = [m for m in rule.route.model_names() if not refused(m)]
            if not allowed:
                notes.append(f"rule '{rule.name}' matched but {refused(rule.route.model_names()[0])}")
                continue
            name = self._pick(rule.route, allowed, job_id)
            reason = "default route" if rule.name == "default" else f"rule '{rule.name}'"
            if len(rule.route.model_names()) > 1:
                reason += f" (weighted: {name} of {', '.join(allowed)})"
            primary = self.decision(name, reason, rule.name)
            fallbacks: dict[str, list[RouteDecision]] = {}
            for kind in FALLBACK_KINDS:
                chain = []
                for m in getattr(rule.route.fallbacks, kind):
                    denied = refused(m)
                    if denied:
                        notes.append(f"fallback {kind} '{m}' dropped: {denied}")
                        continue
                    chain.append(self.decision(m, f"fallback {kind} of rule '{rule.name}'", rule.name))
                fallbacks[kind] = chain
            route = rule.route
            if request.max_tokens is not None and request.max_tokens < route.max_tokens:  # a request may only lower it
                route = route.model_copy(update={"max_tokens": request.max_tokens})
            siblings = [
                self.decision(m, f"{reason}: an equivalent deployment", rule.name) for m in allowed if m != name
            ]
            return RoutePlan(
                rule=rule.name, route=route, primary=primary, fallbacks=fallbacks, notes=notes, siblings=siblings
            )
        raise NoRoute("no route may serve this request: " + "; ".join(notes or ["no rule matched"]))

    def fit(self, plan: RoutePlan, need: Callable[[str], int]) -> RouteDecision:
        """The primary if the request fits its window, else the first context_overflow fallback that does.

        `need(model)` is the input the request needs on that model before any retrieved context (which
        assembly trims to fit): counted with the model's tokenizer, plus its margin.
        """
        primary_model = self.settings.models[plan.primary.model]
        input_tokens = need(plan.primary.model)
        if self.fits(plan.primary.model, input_tokens, plan.route):
            return plan.primary
        total = input_tokens + plan.route.max_tokens
        for d in plan.fallbacks.get("context_overflow", []):
            if self.fits(d.model, need(d.model), plan.route):
                return d.model_copy(
                    update={
                        "reason": d.reason
                        + (f": ~{total} tokens exceed {plan.primary.model}'s window of {primary_model.context_window}")
                    }
                )
        raise NoRoute(
            f"the request needs ~{total} tokens (input ~{input_tokens} + max_tokens {plan.route.max_tokens}) but "
            f"model '{plan.primary.model}' has a context window of {primary_model.context_window}; add a "
            "context_overflow fallback with a larger window, lower max_tokens, or send a shorter question (or fewer turns)"
        )

    def fits(self, name: str, input_tokens: int, route: RouteConfig) -> bool:
        """Input plus the route's output allowance fits model `name`'s context window."""
        return input_tokens + route.max_tokens <= self.settings.models[name].context_window

    def decision(self, name: str, reason: str, rule: str | None = None) -> RouteDecision:
        m: ModelConfig = self.settings.models[name]
        return RouteDecision(provider=m.provider, model=name, model_id=m.model_id, reason=reason, rule=rule)

    def decide(self, tenant: str, request: JobRequest, *, input_tokens: int = 0, job_id: str = "") -> RouteDecision:
        return self.plan(tenant, request, input_tokens=input_tokens, job_id=job_id).primary

    @staticmethod
    def _mismatch(rule: RuleConfig, tenant: str, request: JobRequest, input_tokens: int) -> str | None:
        m = rule.match
        if m.tasks is not None and request.task not in m.tasks:
            return f"task {request.task!r} not in {m.tasks}"
        if m.tenants is not None and tenant not in m.tenants:
            return f"tenant '{tenant}' not in {m.tenants}"
        for k, v in m.tags.items():
            if str(request.metadata.get(k)) != v:
                return f"metadata {k}={request.metadata.get(k)!r}, rule wants {v!r}"
        if m.min_input_tokens is not None and input_tokens < m.min_input_tokens:
            return f"~{input_tokens} input tokens < {m.min_input_tokens}"
        if m.max_input_tokens is not None and input_tokens > m.max_input_tokens:
            return f"~{input_tokens} input tokens > {m.max_input_tokens}"
        return None

    @staticmethod
    def _pick(route: RouteConfig, allowed: list[str], job_id: str) -> str:
        if len(allowed) == 1:
            return allowed[0]
        weights = {t.model: t.weight for t in route.targets}
        total = sum(weights[m] for m in allowed)
        x = int(hashlib.sha256(job_id.encode()).hexdigest()[:12], 16) / 16**12 * total
        for m in allowed:
            x -= weights[m]
            if x < 0:
                return m
        return allowed[-1]


def moderation_rules(settings: Settings) -> list[RuleConfig]:
    """A rule per moderating model: a policy's classification jobs (task `safety-moderation:MODEL`) go to its model."""
    return [
        RuleConfig(name=f"safety moderation ({m})", match=MatchConfig(tasks=[task_of(m)]), route=RouteConfig(model=m))
        for m in models(settings.safety)
    ]
