"""Preparing a job's call: retrieve (off the event loop), route and fit the window, assemble the prompt per model.

`Preparer.prepare` is also what `alto route explain` shows, so the explanation is the decision.
`Assemblies` keeps one assembly per model a job is sent to (a fallback may have another window or
tokenizer), checked against the provider's own count where the model is configured for it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import NamedTuple

from core.assembly import Assembled, assemble, required_tokens, trim_to
from core.chunks import ContextChunk
from core.config.worker import ModelConfig, RouteConfig, Settings
from core.conversation import Ask
from core.errors import NoRoute, PromptTooLong
from core.jobs.checks import missing_collection
from core.logs import log_event
from core.models import Job, JobRequest, RouteDecision
from core.ports import Retriever
from core.providers.base import TokenCounter
from core.providers.registry import ProviderRegistry
from core.routing import RoutePlan, Router
from core.tokenizers import counter

COUNT_TRIES = 3


class Prepared(NamedTuple):
    plan: RoutePlan
    decision: RouteDecision
    assembled: Assembled


class Preparer:
    def __init__(
        self, settings: Settings, router: Router, providers: ProviderRegistry, retriever: Retriever | None
    ) -> None:
        self.settings = settings
        self.router = router
        self.providers = providers
        self.retriever = retriever

    def retrieve(self, tenant: str, request: JobRequest) -> list[ContextChunk]:
        if not request.collection or self.retriever is None:
            return []
        query = request.context_query or request.ask().question  # a conversation: its last user turn
        return self.retriever.search(tenant, request.collection, query, k=self.settings.retrieval.candidates)

    async def candidates(self, tenant: str, request: JobRequest) -> list[ContextChunk]:
        """`retrieve` for a worker, in a thread: a pgvector query, a first snapshot download or a query
        embedding must not stall the other jobs on the loop. NoRoute when the named collection has nothing."""
        if not request.collection or self.retriever is None:
            return []  # most jobs: no trip to a thread
        return await asyncio.to_thread(self._candidates, tenant, request, request.collection)

    def _candidates(self, tenant: str, request: JobRequest, collection: str) -> list[ContextChunk]:
        found = self.retrieve(tenant, request)
        if not found and (missing := missing_collection(self.retriever, tenant, collection)):
            raise NoRoute(missing)  # an API-only app accepted it without looking
        return found

    def refetch(self, tenant: str, request: JobRequest, chunk_ids: list[str]) -> list[ContextChunk]:
        """The chunks a saved reply was given, by id (a redelivery after the reply was saved)."""
        if not (request.collection and self.retriever is not None and chunk_ids):
            return []
        return self.retriever.fetch(tenant, request.collection, chunk_ids)

    async def arefetch(self, tenant: str, request: JobRequest, chunk_ids: list[str]) -> list[ContextChunk]:
        """`refetch` for a worker, in a thread (as `candidates`)."""
        if not (request.collection and self.retriever is not None and chunk_ids):
            return []
        return await asyncio.to_thread(self.refetch, tenant, request, chunk_ids)

    def prepare(
        self,
        tenant: str,
        request: JobRequest,
        candidates: list[ContextChunk],
        *,
        job_id: str = "",
        ask: Ask | None = None,
    ) -> Prepared:
        """Route, fit the window and assemble the prompt (`ask`: with a thread's turns, else the request's own).
        Raises NoRoute when no allowed model can take it."""
        count, ask = counter().count, ask or request.ask()
        best = sorted(candidates, key=lambda c: -c.score)[: self.settings.retrieval.top_k]
        size = sum(map(count, ask.texts())) + sum(count(c.text) for c in best)  # what routing rules on size see
        plan = self.router.plan(tenant, request, input_tokens=size, job_id=job_id)
        route = plan.route
        template = self.settings.templates[route.template]
        bare: dict[str, Assembled] = {}  # with no context, the window check's prompt is the one sent

        def need(name: str) -> int:
            if not candidates:
                try:
                    bare[name] = self.assemble_for(name, ask, candidates, route)
                    return bare[name].input_tokens  # the count plus margin, as required_tokens gives
                except PromptTooLong:
                    pass  # fit decides what happens to a prompt this model cannot take
            model = self.settings.models[name]
            return required_tokens(
                ask, template=template, model=model, reserved_output=min(route.max_tokens, model.max_output_tokens)
            )

        decision = self.router.fit(plan, need)
        assembled = bare.get(decision.model) or self.assemble_for(decision.model, ask, candidates, route)
        return Prepared(plan, decision, assembled)

    def assemble_for(self, model_name: str, ask: Ask, candidates: list[ContextChunk], route: RouteConfig) -> Assembled:
        """The prompt for one model: its window, its tokenizer, its output allowance (PromptTooLong is a NoRoute)."""
        model = self.settings.models[model_name]
        return assemble(
            ask,
            candidates,
            template_id=route.template,
            template=self.settings.templates[route.template],
            model_name=model_name,
            model=model,
            reserved_output=min(route.max_tokens, model.max_output_tokens),
            settings=self.settings.retrieval,
        )

    def assemblies(self, ask: Ask, candidates: list[ContextChunk], prepared: Prepared) -> Assemblies:
        return Assemblies(self, ask, candidates, prepared)


class Assemblies:
    """One job's assembly per model, built on first use."""

    def __init__(self, preparer: Preparer, ask: Ask, candidates: list[ContextChunk], prepared: Prepared) -> None:
        self.preparer = preparer
        self.ask = ask
        self.candidates = candidates
        self.prepared = prepared
        self._by_model: dict[str, Assembled] = {}

    async def get(self, decision: RouteDecision) -> Assembled:
        if decision.model in self._by_model:
            return self._by_model[decision.model]
        route = self.prepared.plan.route
        if self.prepared.assembled.record.model == decision.model:
            assembled = self.prepared.assembled
        else:
            assembled = self.preparer.assemble_for(decision.model, self.ask, self.candidates, route)
        model = self.preparer.settings.models[decision.model]
        if model.count_tokens == "provider":
            assembled = await self._provider_checked(decision, model, assembled, route)
        self._by_model[decision.model] = assembled
        r = assembled.record
        log_event(
            "prompt.assembled",
            model=decision.model,
            template=r.template,
            input_tokens=r.input_tokens,
            context_tokens=r.context_tokens,
            context_budget=r.context_budget,
            chunks=len(r.chunks),
            dropped=len(r.dropped),
        )
        return assembled

    async def _provider_checked(
        self, decision: RouteDecision, model: ModelConfig, assembled: Assembled, route: RouteConfig
    ) -> Assembled:
        """Trim further while the provider counts more than the window allows (our count plus margin
        still holds when the provider can't count, or counting fails)."""
        provider = self.preparer.providers.get(decision.provider)
        if not isinstance(provider, TokenCounter):
            log_event("tokens.count_unsupported", logging.WARNING, provider=decision.provider)
            return assembled
        limit = model.context_window - assembled.record.reserved_output_tokens
        settings = self.preparer.settings
        for _ in range(COUNT_TRIES):
            try:
                prompt = assembled.prompt
                counted = await provider.count_tokens(decision.model_id, prompt.system, prompt.user, prompt.history)
            except Exception as e:  # counting is advisory
                log_event("tokens.count_failed", logging.WARNING, provider=decision.provider, error=str(e)[:300])
                return assembled
            assembled.record.provider_input_tokens = counted
            if counted <= limit:
                return assembled
            trimmed = trim_to(
                assembled,
                counted - limit,
                ask=self.ask,
                template_id=route.template,
                template=settings.templates[route.template],
                model_name=decision.model,
                model=model,
                reserved_output=assembled.record.reserved_output_tokens,
                settings=settings.retrieval,
            )
            if trimmed is None:
                raise NoRoute(f"the provider counts {counted} input tokens, over the {limit} '{decision.model}' allows")
            assembled = trimmed
        return assembled


class Run(NamedTuple):
    """What one delivery carries from stage to stage once its job is prepared."""

    job: Job
    prepared: Prepared
    assemblies: Assemblies
    deadline: float
