"""The service layer: `submit` and `process` are the only paths every entry point uses.

Local server, CLI and each cloud handler call these; none of them holds job logic of its own.

Guarantees kept here, whatever the runtime:
- total provider calls per job never exceed `governance.max_attempts`: the counter is persisted
  with a compare-and-set *before* each call, so redeliveries and crashed workers cannot exceed it;
- a duplicate delivery while the job is leased by another worker is deferred, not processed;
- the provider's reply is persisted before any later step, so a crash after the reply never
  causes a second call on redelivery.
"""

from __future__ import annotations

import json
import logging
import time
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable, Literal, NamedTuple, TypeVar

from core.config import ApiSettings
from core.errors import IdempotencyConflict, InputError, NotFound, QueueUnavailable
from core.guardrails import GuardrailViolation, check_input, check_output
from core.ids import new_job_id, new_trace_id
from core.logs import Timer, job_id_var, log_event, trace_id_var
from core.models import (
    Attempt,
    ErrorClass,
    Job,
    JobError,
    JobRequest,
    JobStatus,
    JobView,
    ProviderResult,
    QueueMessage,
    RouteDecision,
    Usage,
)
from core.ports import (
    ConflictError,
    Delivery,
    JobQueue,
    JobStore,
    Retriever,
    StateStore,
)

# The worker side (routing, assembly, governance, retries) is imported where `process` needs it, not
# here: a cold start that only serves the API (submit, status) never loads it.
if TYPE_CHECKING:
    from core.assembly import Assembled
    from core.settings import ModelConfig, RouteConfig, Settings
    from core.governance.breaker import CircuitBreaker, Gate
    from core.governance.cache import ResponseCache
    from core.governance.ratelimit import Deferral, RateLimiter, Reservation
    from core.providers.base import ContextChunk
    from core.providers.registry import ProviderRegistry
    from core.routing import RoutePlan, Router

T = TypeVar("T")
IDEMPOTENCY_TTL_S = 24 * 3600
MIN_CALL_S = 1.0  # don't start a provider call with less than this left before the deadline
SLOT_POLL_S = 0.1  # how often a worker re-checks a full concurrency cap while it may still wait in process


# NamedTuples rather than dataclasses here and in core.ports / core.api: these modules load on every
# cold start, the API's included, and generating a dataclass costs ~0.4 ms there.
class Prepared(NamedTuple):
    plan: RoutePlan
    decision: RouteDecision
    assembled: Assembled


class Outcome(NamedTuple):
    """What the runtime should do with the delivery.

    `ack` deletes it; `retry` hands it back after `delay_s` (counts as a delivery, so a message that
    keeps failing reaches the DLQ); `defer` sends a fresh copy delayed by `delay_s` and deletes this
    one, so waiting for a rate limit or an open circuit never uses up the queue's receive count.
    """

    action: Literal["ack", "retry", "defer"]
    delay_s: float = 0.0
    status: JobStatus | None = None
    detail: str = ""


class JobService:
    def __init__(
        self,
        settings: ApiSettings,
        *,
        store: JobStore,
        state: StateStore,
        queue: JobQueue,
        providers: ProviderRegistry | None,
        retriever: Retriever | None = None,
        router: Router | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.state = state
        self.queue = queue
        self._providers = providers
        self.retriever = retriever
        if router is not None:
            self.router = router
        self.clock = clock

    @property
    def providers(self) -> ProviderRegistry:
        if self._providers is None:
            raise TypeError("this JobService has no providers (built for the HTTP API alone); bootstrap() one "
                            "to process jobs")
        return self._providers

    @cached_property
    def full_settings(self) -> Settings:
        """The sections job processing reads. A service built from `ApiSettings` (an HTTP API
        function) submits and reads jobs but cannot process them."""
        from core.settings import Settings

        if not isinstance(self.settings, Settings):
            raise TypeError("this JobService was built from ApiSettings (API only); bootstrap() one from "
                            "load_settings() to process jobs")
        return self.settings

    @cached_property
    def router(self) -> Router:
        from core.routing import Router

        return Router(self.full_settings)

    @cached_property
    def cache(self) -> ResponseCache | None:
        from core.governance.cache import ResponseCache

        cfg = self.settings.governance.cache
        return ResponseCache(self.state, cfg) if cfg.enabled else None

    @cached_property
    def limiter(self) -> RateLimiter:
        from core.governance.ratelimit import RateLimiter

        return RateLimiter(self.state, clock=self.clock)

    @cached_property
    def breaker(self) -> CircuitBreaker:
        from core.governance.breaker import CircuitBreaker

        return CircuitBreaker(self.state, self.settings.governance.breaker, clock=self.clock)

    async def _io(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A job-store call on the processing path. A remote store (DynamoDB, Firestore, Table
        Storage: milliseconds a call) runs in a thread, so the records of one batch overlap their
        writes; the embedded SQLite store (microseconds) runs inline."""
        if getattr(self.store, "remote", False):
            import asyncio

            return await asyncio.to_thread(fn, *args, **kwargs)
        return fn(*args, **kwargs)

    # ------------------------------------------------------------------ submit

    def submit(
        self, tenant: str, request: JobRequest, *, idempotency_key: str | None = None, trace_id: str | None = None
    ) -> tuple[Job, bool]:
        """Store and enqueue a job. Returns (job, created); a repeated idempotency key returns the first job."""
        collection = self._collection_for(tenant, request)
        try:
            check_input(request.prompt, self.settings.guardrails)
        except GuardrailViolation as e:
            raise InputError(str(e), field="prompt") from None
        if request.collection and (missing := self._missing_collection(tenant, request.collection)):
            raise InputError(missing, field="collection")
        fingerprint = request.fingerprint()
        job_id = new_job_id()
        if idempotency_key is not None:
            if not (1 <= len(idempotency_key) <= 255):
                raise InputError("Idempotency-Key must be 1 to 255 characters", field="Idempotency-Key")
            key = f"idem:{tenant}:{idempotency_key}"
            if not self.state.put_if_absent(key, {"job_id": job_id, "hash": fingerprint}, ttl_s=IDEMPOTENCY_TTL_S):
                rec = self.state.get(key)
                if rec is not None:
                    if rec.value["hash"] != fingerprint:
                        raise IdempotencyConflict(
                            "this Idempotency-Key was already used with a different request body; "
                            "use a new key for a new request"
                        )
                    existing = self.store.get(rec.value["job_id"])
                    if existing is not None:
                        if existing.status is JobStatus.queued and existing.provider_calls == 0:
                            # the first submit may have stored the job but failed to queue it; a second
                            # message is harmless (processing is idempotent), a missing one is not
                            self._enqueue_or_raise(existing)
                        return existing, False
                    job_id = rec.value["job_id"]  # first submit crashed before storing: finish it
        now = self.clock()
        job = Job(
            id=job_id,
            tenant=tenant,
            request=request,
            request_hash=fingerprint,
            idempotency_key=idempotency_key,
            trace_id=trace_id or new_trace_id(),
            created_at=now,
            updated_at=now,
        )
        if collection and not request.collection:
            job.request = request.model_copy(update={"collection": collection})
        try:
            self.store.create(job)
        except ConflictError:
            existing = self.store.get(job_id)
            assert existing is not None
            return existing, False
        self._enqueue_or_raise(job)
        log_event(
            "job.submitted", job_id=job.id, trace_id=job.trace_id, tenant=tenant, task=request.task,
            input_hash=fingerprint[:16], prompt_chars=len(request.prompt),
        )
        return job, True

    def _enqueue_or_raise(self, job: Job) -> None:
        try:
            self._enqueue(job)
        except Exception as e:
            log_event("queue.send_failed", logging.ERROR, job_id=job.id, trace_id=job.trace_id, error=repr(e)[:500])
            after = int(self.settings.governance.reconcile_after_s)
            raise QueueUnavailable(
                f"job {job.id} was stored but the queue rejected it ({type(e).__name__}); retry with the same "
                f"Idempotency-Key to queue it now, or the reconciler will queue it within {after} s. "
                "Without an Idempotency-Key, do not resubmit: the job would run twice",
                job_id=job.id,
            ) from e

    def _enqueue(self, job: Job, delay_s: float = 0.0) -> None:
        msg = QueueMessage(job_id=job.id, tenant=job.tenant, trace_id=job.trace_id)
        self.queue.send(msg.model_dump_json(), delay_s=delay_s)

    def _collection_for(self, tenant: str, request: JobRequest) -> str | None:
        if request.collection:
            return request.collection
        t = self.settings.tenants.get(tenant)
        return t.default_collection if t else None

    # ------------------------------------------------------------------ read

    def get(self, tenant: str, job_id: str) -> Job:
        job = self.store.get(job_id)
        if job is None or job.tenant != tenant:
            raise NotFound(f"job {job_id} not found")
        return job

    def view(self, tenant: str, job_id: str) -> JobView:
        return JobView.of(self.get(tenant, job_id))

    # ------------------------------------------------------------------ process

    async def process(self, delivery: Delivery, *, deadline: float | None = None) -> Outcome:
        """Run one delivery to a decision. Never raises for job-level failures; the Outcome says what to do."""
        try:
            msg = QueueMessage.model_validate_json(delivery.body)
        except ValueError as e:
            log_event("queue.bad_message", logging.ERROR, message_id=delivery.message_id, error=str(e)[:500])
            # keep the body: let the platform redrive it to the DLQ for a human to read
            return Outcome("retry", delay_s=self.settings.governance.backoff_max_s, detail="unparseable message")
        trace_token = trace_id_var.set(msg.trace_id)
        job_token = job_id_var.set(msg.job_id)
        try:
            return await self._process(msg, delivery, deadline or (self.clock() + self.settings.governance.lease_s))
        finally:
            trace_id_var.reset(trace_token)
            job_id_var.reset(job_token)

    async def _process(self, msg: QueueMessage, delivery: Delivery, deadline: float) -> Outcome:
        from core.governance.cache import cache_key
        from core.governance.ratelimit import Deferral
        from core.governance.state import Contended
        from core.retry import jittered
        from core.routing import NoRoute

        gov = self.settings.governance
        job = await self._io(self.store.get, msg.job_id)
        if job is None:
            log_event("job.missing", logging.WARNING, receive_count=delivery.receive_count)
            return Outcome("retry", delay_s=5.0, detail="job record not found yet")
        if job.status.terminal:
            return Outcome("ack", status=job.status, detail="already terminal (duplicate delivery)")
        now = self.clock()
        if job.status is JobStatus.running and job.lease_expires_at and job.lease_expires_at > now:
            wait = max(1.0, job.lease_expires_at - now)
            log_event("job.deferred", reason="leased by another worker", delay_s=round(wait, 2))
            return Outcome("retry", delay_s=wait, status=job.status, detail="leased by another worker")
        if job.reply is not None:
            return await self._finalize(job)

        candidates = self._retrieve(job)
        collection = job.request.collection
        if not candidates and collection and (missing := self._missing_collection(job.tenant, collection)):
            return self._fail_permanent(job, missing)  # an API-only app accepted it without looking
        try:
            check_input(job.request.prompt, self.settings.guardrails)
            prepared = self.prepare(job.tenant, job.request, candidates, job_id=job.id)
        except (GuardrailViolation, NoRoute) as e:
            return self._fail_permanent(job, str(e))
        plan, current = prepared.plan, prepared.decision
        route = plan.route
        for note in plan.notes:
            log_event("route.note", note=note)
        assemblies: dict[str, Assembled] = {}
        try:
            a = await self._assembly_for(current, job, candidates, plan, assemblies, prepared.assembled)
        except NoRoute as e:
            return self._fail_permanent(job, str(e))
        use_cache = self.cache is not None and job.request.cache
        if use_cache:
            assert self.cache is not None
            hit = self.cache.get(cache_key(job.tenant, job.request, current, route.max_tokens, a.prompt.template, a.chunks))
            if hit is not None:
                return await self._serve_cached(job, hit, current, a)
        tried = {current.model}

        while True:
            if job.provider_calls >= gov.max_attempts:
                return self._dead_letter_job(job, "attempt budget exhausted")
            now = self.clock()
            if deadline - now < MIN_CALL_S:
                return self._hand_back(job, delay_s=0.0, detail="no time left in this invocation")
            try:
                assembled = await self._assembly_for(current, job, candidates, plan, assemblies)
            except NoRoute as e:
                return self._fail_permanent(job, str(e))
            try:
                admitted = await self._admit(plan, current, assembled.input_tokens, deadline)
            except Contended as e:
                return self._defer(job, jittered(1.0), str(e))
            if isinstance(admitted, Deferral):
                return self._defer(job, jittered(admitted.delay_s), admitted.reason)
            decision, model, gate, reservation, slot = admitted
            if decision.model != current.model:  # the breaker sent us to a circuit_open fallback
                try:
                    assembled = await self._assembly_for(decision, job, candidates, plan, assemblies)
                except NoRoute as e:
                    self.limiter.release_slot(model, slot)
                    self.breaker.abandon(gate)
                    return self._fail_permanent(job, str(e))
            try:
                step = await self._call(job, decision, model, plan, gate, reservation, assembled, deadline, tried)
            finally:
                self.limiter.release_slot(model, slot)
            if isinstance(step, RouteDecision):
                current = step  # a typed fallback: the next attempt goes to another model
                tried.add(current.model)
                continue
            if step is None:
                continue  # an in-process retry
            if step.status is JobStatus.succeeded and use_cache and job.cached_from is None:
                assert self.cache is not None and job.reply is not None
                key = cache_key(
                    job.tenant, job.request, decision, route.max_tokens, assembled.prompt.template, assembled.chunks,
                )
                self.cache.put(key, job.reply, job.id)
            return step

    def prepare(
        self, tenant: str, request: JobRequest, candidates: list[ContextChunk], *, job_id: str = "",
    ) -> Prepared:
        """Route, fit the window and assemble the prompt: what `process` will send, and what
        `alto route explain` shows. Raises NoRoute when no allowed model can take the request."""
        from core.assembly import required_tokens
        from core.tokenizers import counter

        count = counter().count
        best = sorted(candidates, key=lambda c: -c.score)[: self.full_settings.retrieval.top_k]
        size = count(request.prompt) + sum(count(c.text) for c in best)  # what routing rules on size see
        plan = self.router.plan(tenant, request, input_tokens=size, job_id=job_id)
        route = plan.route
        template = self.full_settings.templates[route.template]

        def need(name: str) -> int:
            model = self.full_settings.models[name]
            return required_tokens(
                request.prompt, template=template, model=model, reserved_output=min(route.max_tokens, model.max_output_tokens),
            )

        decision = self.router.fit(plan, need)
        return Prepared(plan, decision, self.assemble_for(decision.model, request.prompt, candidates, route))

    def assemble_for(self, model_name: str, question: str, candidates: list[ContextChunk], route: RouteConfig) -> Assembled:
        """The prompt for one model: its window, its tokenizer, its output allowance."""
        from core.assembly import PromptTooLong, assemble
        from core.routing import NoRoute

        model = self.full_settings.models[model_name]
        try:
            return assemble(
                question, candidates, template_id=route.template, template=self.full_settings.templates[route.template],
                model_name=model_name, model=model, reserved_output=min(route.max_tokens, model.max_output_tokens),
                settings=self.full_settings.retrieval,
            )
        except PromptTooLong as e:
            raise NoRoute(str(e)) from None

    async def _assembly_for(
        self, decision: RouteDecision, job: Job, candidates: list[ContextChunk], plan: RoutePlan,
        assemblies: dict[str, Assembled], prepared: Assembled | None = None,
    ) -> Assembled:
        """Assemble once per model the job is sent to (a fallback may have another window or tokenizer),
        checked against the provider's own count where the model is configured for it."""
        if decision.model in assemblies:
            return assemblies[decision.model]
        if prepared is not None and prepared.record.model == decision.model:
            assembled = prepared
        else:
            assembled = self.assemble_for(decision.model, job.request.prompt, candidates, plan.route)
        model = self.full_settings.models[decision.model]
        if model.count_tokens == "provider":
            assembled = await self._provider_checked(decision, model, assembled, job.request.prompt, plan.route)
        assemblies[decision.model] = assembled
        r = assembled.record
        log_event(
            "prompt.assembled", model=decision.model, template=r.template, input_tokens=r.input_tokens,
            context_tokens=r.context_tokens, context_budget=r.context_budget, chunks=len(r.chunks), dropped=len(r.dropped),
        )
        return assembled

    async def _provider_checked(
        self, decision: RouteDecision, model: ModelConfig, assembled: Assembled, question: str, route: RouteConfig,
    ) -> Assembled:
        from core.assembly import trim_to
        from core.routing import NoRoute

        provider = self.providers.get(decision.provider)
        count_tokens = getattr(provider, "count_tokens", None)
        if count_tokens is None:
            log_event("tokens.count_unsupported", logging.WARNING, provider=decision.provider)
            return assembled
        limit = model.context_window - assembled.record.reserved_output_tokens
        for _ in range(3):
            try:
                counted = await count_tokens(decision.model_id, assembled.prompt.system, assembled.prompt.user)
            except Exception as e:  # counting is advisory: our own count plus margin still holds
                log_event("tokens.count_failed", logging.WARNING, provider=decision.provider, error=str(e)[:300])
                return assembled
            assembled.record.provider_input_tokens = counted
            if counted <= limit:
                return assembled
            trimmed = trim_to(
                assembled, counted - limit, question=question, template_id=route.template,
                template=self.full_settings.templates[route.template], model_name=decision.model, model=model,
                reserved_output=assembled.record.reserved_output_tokens, settings=self.full_settings.retrieval,
            )
            if trimmed is None:
                raise NoRoute(f"the provider counts {counted} input tokens, over the {limit} '{decision.model}' allows")
            assembled = trimmed
        return assembled

    async def _admit(
        self, plan: RoutePlan, current: RouteDecision, est_input: int, deadline: float,
    ) -> tuple[RouteDecision, ModelConfig, Gate, Reservation, str | None] | Deferral:
        """Pick a deployment whose circuit lets us through, then take a concurrency slot and rate tokens.

        Nothing here is an attempt: a job that can't be admitted is deferred with its budget intact.
        """
        import asyncio  # here, not at module level: the submit path never needs it

        from core.governance.ratelimit import Deferral

        gov = self.settings.governance
        candidates = [current] + [d for d in plan.fallbacks.get("circuit_open", []) if d.model != current.model]
        retry_in: float | None = None
        for decision in candidates:
            model = self.full_settings.models[decision.model]
            gate = self.breaker.check(model, probe_timeout_s=gov.lease_s)
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
        self.providers.get(decision.provider)
        patience = max(0.0, min(gov.in_process_wait_s, deadline - self.clock() - MIN_CALL_S))
        waited = 0.0
        while (slot := self.limiter.acquire_slot(model, hold_s=gov.lease_s)) is None:
            if waited + SLOT_POLL_S > patience:
                self.breaker.abandon(gate)
                return Deferral(delay_s=max(1.0, SLOT_POLL_S * 10), reason=f"concurrency cap on {decision.model}")
            await asyncio.sleep(SLOT_POLL_S)
            waited += SLOT_POLL_S
        reserved = self.limiter.reserve(model, input_tokens=est_input, max_wait_s=max(0.0, patience - waited))
        if isinstance(reserved, Deferral):
            self.limiter.release_slot(model, slot)
            self.breaker.abandon(gate)
            return reserved
        if reserved.wait_s > 0:
            await asyncio.sleep(reserved.wait_s)
        return decision, model, gate, reserved, slot

    async def _call(
        self, job: Job, decision: RouteDecision, model: ModelConfig, plan: RoutePlan, gate: Gate,
        reservation: Reservation, assembled: Assembled, deadline: float, tried: set[str],
    ) -> Outcome | RouteDecision | None:
        """One provider call under the persisted budget.

        Returns an Outcome when the delivery is decided, a RouteDecision when a typed fallback should
        take the next attempt, or None when an in-process retry of the same model should follow.
        """
        import asyncio

        from core.classify import classify
        from core.governance.state import Contended
        from core.providers.base import ChatRequest
        from core.retry import retry_delay

        gov = self.settings.governance
        route = plan.route
        now = self.clock()
        # claim: persist the call count and lease before paying for the call
        expected = job.version
        job.status = JobStatus.running
        job.provider_calls += 1
        job.lease_expires_at = min(now + gov.lease_s, deadline)
        job.route = decision
        prompt, chunks = assembled.prompt, assembled.chunks
        job.context_chunks = [c.id for c in chunks]
        job.prompt_template = prompt.template
        job.assembly = assembled.record
        attempt = Attempt(
            number=job.provider_calls, started_at=now, trace_id=job.trace_id,
            provider=decision.provider, model=decision.model,
        )
        job.attempts.append(attempt)
        job.updated_at = now
        if not await self._io(self.store.update, job, expected_version=expected):
            self.breaker.abandon(gate)
            return Outcome("retry", delay_s=1.0, detail="lost the claim race to another delivery")
        if len(job.attempts) == 1 or job.attempts[-2].model != decision.model or gate.kind == "probe":
            log_event("route.decided", provider=decision.provider, model=decision.model, reason=decision.reason)

        provider = self.providers.get(decision.provider)
        timeout = max(0.1, min(self.full_settings.providers[decision.provider].timeout_s, job.lease_expires_at - now))
        request = ChatRequest(
            model_id=decision.model_id, system=prompt.system, user=prompt.user,
            question=job.request.prompt, max_tokens=min(route.max_tokens, model.max_output_tokens), context=chunks,
        )
        timer = Timer()
        try:
            result = await provider.generate(request, timeout_s=timeout)
        except asyncio.CancelledError:
            self.breaker.abandon(gate)
            raise
        except Exception as exc:  # classified below; never lost
            c = classify(exc)
            self.breaker.record(gate, c.error_class)
            attempt.finished_at = self.clock()
            attempt.latency_ms = timer.ms
            attempt.outcome = "error"
            attempt.error_class = c.error_class
            attempt.status_code = getattr(exc, "status_code", None)
            attempt.error = str(exc)[:1000]
            log_event(
                "provider.error", logging.WARNING, provider=decision.provider, model=decision.model,
                error_class=c.error_class.value, status_code=attempt.status_code, latency_ms=attempt.latency_ms,
                attempt=attempt.number,
                body=(getattr(exc, "body", None) or "")[:2000] if c.error_class is ErrorClass.malformed else None,
            )
            job.error = JobError(error_class=c.error_class, message=attempt.error, status_code=attempt.status_code)
            fallback = self._typed_fallback(exc, c.error_class, plan, tried, assembled.input_tokens)
            if fallback is not None and job.provider_calls < gov.max_attempts:
                expected = job.version
                job.updated_at = self.clock()
                if not self.store.update(job, expected_version=expected):
                    return Outcome("retry", delay_s=1.0, detail="job changed under us")
                log_event("route.fallback", model=fallback.model, reason=fallback.reason)
                return fallback
            if not c.retryable:
                return self._finish_failed(job)
            if job.provider_calls >= gov.max_attempts:
                return self._dead_letter_job(job, "attempt budget exhausted")
            delay = retry_delay(
                job.provider_calls, retry_after_s=c.retry_after_s, base_s=gov.backoff_base_s,
                cap_s=gov.backoff_max_s, retry_after_cap_s=gov.retry_after_cap_s,
            )
            if self.clock() + delay + MIN_CALL_S < deadline and delay <= gov.in_process_wait_s:
                # fits in this invocation: persist the attempt, wait, go again
                expected = job.version
                job.updated_at = self.clock()
                if not self.store.update(job, expected_version=expected):
                    return Outcome("retry", delay_s=1.0, detail="job changed under us")
                await asyncio.sleep(delay)
                return None
            return self._hand_back(job, delay_s=delay, detail=f"{c.error_class.value} error, retrying later")

        self.breaker.record(gate, None)
        attempt.finished_at = self.clock()
        attempt.latency_ms = timer.ms
        attempt.outcome = "succeeded"
        job.reply = result
        job.error = None
        if not await self._io(self._persist, job):
            return Outcome("retry", delay_s=1.0, detail="could not persist the provider reply")
        try:
            self.limiter.settle(model, reservation, input_tokens=result.input_tokens, output_tokens=result.output_tokens)
        except Contended as e:  # the reply is safe; a missed correction only skews the bucket briefly
            log_event("ratelimit.settle_skipped", logging.WARNING, error=str(e))
        log_event(
            "provider.reply", provider=decision.provider, model=decision.model, latency_ms=attempt.latency_ms,
            input_tokens=result.input_tokens, output_tokens=result.output_tokens, attempt=attempt.number,
        )
        return await self._finalize(job, chunks)

    def _typed_fallback(
        self, exc: Exception, error_class: ErrorClass, plan: RoutePlan, tried: set[str], est_input: int,
    ) -> RouteDecision | None:
        """The next model of the chain this error calls for (429/529, refusal, context overflow), if any."""
        status = getattr(exc, "status_code", None)
        if getattr(exc, "context_overflow", False):
            kind = "context_overflow"
        elif getattr(exc, "content_policy", False):
            kind = "content_policy"
        elif error_class is ErrorClass.rate_limited or status in (503, 529):  # rate limit or overload
            kind = "rate_limited"
        else:
            return None
        for d in plan.fallbacks.get(kind, []):
            if d.model in tried:
                continue
            if kind == "context_overflow" and not self.router.fits(d.model, est_input, plan.route):
                continue
            return d
        return None

    def _fail_permanent(self, job: Job, message: str) -> Outcome:
        """Refused before any call (guardrail, policy, no model fits): explained, never retried."""
        job.error = JobError(error_class=ErrorClass.permanent, message=message)
        log_event("job.refused", logging.WARNING, reason=message)
        return self._finish_failed(job)

    async def _serve_cached(
        self, job: Job, hit: tuple[ProviderResult, str], decision: RouteDecision, assembled: Assembled,
    ) -> Outcome:
        reply, source_job = hit
        expected = job.version
        chunks = assembled.chunks
        job.route = decision.model_copy(update={"reason": decision.reason + " (response cache hit)"})
        job.prompt_template = assembled.prompt.template
        job.context_chunks = [c.id for c in chunks]
        job.assembly = assembled.record
        job.reply = reply
        job.cached_from = source_job
        job.updated_at = self.clock()
        if not self.store.update(job, expected_version=expected):
            return Outcome("retry", delay_s=1.0, detail="job changed under us")
        log_event("cache.hit", source_job=source_job, model=decision.model)
        return await self._finalize(job, chunks)

    def _defer(self, job: Job, delay_s: float, reason: str) -> Outcome:
        """Come back later without spending an attempt. A job we were running is handed back first."""
        if job.status is JobStatus.running:
            handed = self._hand_back(job, delay_s=delay_s, detail=reason)
            if handed.status is not JobStatus.queued:
                return handed
        log_event("job.deferred", reason=reason, delay_s=round(delay_s, 3))
        return Outcome("defer", delay_s=delay_s, status=JobStatus.queued, detail=reason)

    def _missing_collection(self, tenant: str, collection: str) -> str | None:
        """Why `collection` can't be used, if it has no documents for `tenant` (None: fine, or no way to tell)."""
        known = getattr(self.retriever, "collections", None) if self.retriever is not None else None
        if known is None or collection in known(tenant):
            return None
        return (f"collection '{collection}' has no documents for this tenant; ingest some with "
                f"`alto ingest PATH --collection {collection} --tenant {tenant}` or omit the field")

    def _retrieve(self, job: Job) -> list[ContextChunk]:
        if not job.request.collection or self.retriever is None:
            return []
        query = job.request.context_query or job.request.prompt
        k = self.full_settings.retrieval.candidates
        return self.retriever.search(job.tenant, job.request.collection, query, k=k)

    def _persist(self, job: Job) -> bool:
        """Write the job; on a version race, re-read and re-apply our reply if nobody finished it first."""
        for _ in range(5):
            if self.store.update(job, expected_version=job.version):
                return True
            current = self.store.get(job.id)
            if current is None or current.status.terminal or current.reply is not None:
                return False
            current.reply, current.attempts, current.error = job.reply, job.attempts, job.error
            job = current
        return False

    async def _finalize(self, job: Job, chunks: list[ContextChunk] | None = None) -> Outcome:
        """Everything after the reply: citations, usage and cost, the result write, the callback."""
        from core.prompting import extract_citations

        assert job.reply is not None
        if chunks is None:  # a redelivery after the reply was saved: the same chunks, by id
            chunks = []
            if job.request.collection and self.retriever is not None and job.context_chunks:
                chunks = self.retriever.fetch(job.tenant, job.request.collection, job.context_chunks)
        model = self.full_settings.models.get(job.route.model) if job.route else None
        reply: ProviderResult = job.reply
        now = self.clock()
        expected = job.version
        job.result_text = reply.text
        job.citations = extract_citations(reply.text, chunks)
        if job.cached_from is not None:
            job.usage = Usage(cached=True)  # nothing was sent to the provider for this job
        else:
            job.usage = Usage(
                input_tokens=reply.input_tokens, output_tokens=reply.output_tokens,
                cache_read_tokens=reply.cache_read_tokens,
                cost_usd=model.cost(reply.input_tokens, reply.output_tokens, reply.cache_read_tokens) if model else 0.0,
            )
        job.status = JobStatus.succeeded
        try:
            check_output(reply.text, job.citations, self.settings.guardrails)
        except GuardrailViolation as e:
            # the reply was paid for and stays in the job record; it is not served
            job.status = JobStatus.failed
            job.result_text = None
            job.error = JobError(error_class=ErrorClass.permanent, message=str(e))
            log_event("job.guardrail_failed", logging.WARNING, rule=e.rule)
        job.lease_expires_at = None
        job.finished_at = now
        job.updated_at = now
        if not await self._io(self.store.update, job, expected_version=expected):
            current = self.store.get(job.id)
            if current is not None and current.status.terminal:
                return Outcome("ack", status=current.status, detail="finished by another delivery")
            return Outcome("retry", delay_s=1.0, detail="result write lost a race")
        log_event(
            "job." + job.status.value, model=job.route.model if job.route else None, input_tokens=job.usage.input_tokens,
            output_tokens=job.usage.output_tokens, cost_usd=job.usage.cost_usd, attempts=len(job.attempts),
            citations=len(job.citations), latency_ms=round((now - job.created_at) * 1000, 1),
        )
        if job.request.callback_url:
            await self._callback(job)
        return Outcome("ack", status=job.status)

    async def _callback(self, job: Job) -> None:
        """POST the job view to the callback URL once; the outcome is recorded, the job result is not at risk."""
        import asyncio
        import urllib.request

        body = JobView.of(job).model_dump_json().encode()
        req = urllib.request.Request(
            job.request.callback_url or "", data=body, method="POST",
            headers={"content-type": "application/json", "x-alto-job-id": job.id, "x-alto-trace-id": job.trace_id},
        )

        def send() -> int:
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 (scheme validated at submit)
                return resp.status

        record: dict[str, object] = {"url": job.request.callback_url, "at": self.clock()}
        try:
            record["status"] = await asyncio.to_thread(send)
        except Exception as e:
            record["error"] = str(e)[:500]
            log_event("job.callback_failed", logging.WARNING, error=record["error"])
        for _ in range(3):
            current = self.store.get(job.id)
            if current is None:
                return
            current.callback = record
            if self.store.update(current, expected_version=current.version):
                return

    def _hand_back(self, job: Job, *, delay_s: float, detail: str) -> Outcome:
        expected = job.version
        job.status = JobStatus.queued
        job.lease_expires_at = None
        job.updated_at = self.clock()
        if not self.store.update(job, expected_version=expected):
            return Outcome("retry", delay_s=max(1.0, delay_s), detail="job changed under us")
        log_event("job.retry_scheduled", delay_s=round(delay_s, 3), detail=detail, provider_calls=job.provider_calls)
        return Outcome("retry", delay_s=delay_s, status=JobStatus.queued, detail=detail)

    def _finish_failed(self, job: Job) -> Outcome:
        expected = job.version
        job.status = JobStatus.failed
        job.lease_expires_at = None
        job.finished_at = job.updated_at = self.clock()
        if not self.store.update(job, expected_version=expected):
            return Outcome("retry", delay_s=1.0, detail="job changed under us")
        log_event("job.failed", logging.WARNING, error_class=job.error.error_class.value if job.error else None)
        return Outcome("ack", status=JobStatus.failed, detail=job.error.message if job.error else "failed")

    def _dead_letter_job(self, job: Job, reason: str) -> Outcome:
        expected = job.version
        job.status = JobStatus.dead_lettered
        job.lease_expires_at = None
        job.finished_at = job.updated_at = self.clock()
        job.error = _with_reason(job.error, reason)
        if not self.store.update(job, expected_version=expected):
            return Outcome("retry", delay_s=1.0, detail="job changed under us")
        log_event("job.dead_lettered", logging.ERROR, reason=reason, provider_calls=job.provider_calls)
        return Outcome("ack", status=JobStatus.dead_lettered, detail=reason)

    # ------------------------------------------------------------------ reconciler

    def reconcile(self, *, older_than_s: float | None = None, limit: int = 500) -> dict[str, int]:
        """Re-send the message of every job that has been stuck long enough to have lost it.

        A job whose enqueue failed after it was stored, or whose message the platform dropped or
        dead-lettered while a worker held the lease, would otherwise wait forever. A second message
        is harmless (processing is idempotent), so this errs on the side of sending.
        """
        older = self.settings.governance.reconcile_after_s if older_than_s is None else older_than_s
        now = self.clock()
        counts = {"requeued": 0, "checked": 0}
        for status in (JobStatus.queued, JobStatus.running):
            for job in self.store.list(status=status, updated_before=now - older, limit=limit):
                counts["checked"] += 1
                if status is JobStatus.running and job.lease_expires_at and job.lease_expires_at > now - older:
                    continue  # a live (or recently expired) lease: its worker or the queue still owns it
                expected = job.version
                job.updated_at = now  # so the next sweep leaves it alone for another `older` seconds
                if not self.store.update(job, expected_version=expected):
                    continue
                self._enqueue(job)
                counts["requeued"] += 1
                log_event("job.reconciled", logging.WARNING, job_id=job.id, trace_id=job.trace_id,
                          status=status.value)
        return counts

    # ------------------------------------------------------------------ dead letters and replay

    def dead_letter(self, delivery: Delivery) -> Job | None:
        """Called for a message the platform dead-lettered: mark its job, keeping the error state.

        A job that is terminal, or still leased by a live worker, is left alone.
        """
        try:
            msg = QueueMessage.model_validate_json(delivery.body)
        except ValueError:
            log_event("dlq.bad_message", logging.ERROR, message_id=delivery.message_id, body=delivery.body[:2000])
            return None
        for _ in range(5):
            job = self.store.get(msg.job_id)
            if job is None or job.status.terminal:
                return job
            now = self.clock()
            if job.status is JobStatus.running and job.lease_expires_at and job.lease_expires_at > now:
                return job
            expected = job.version
            job.status = JobStatus.dead_lettered
            job.lease_expires_at = None
            job.finished_at = job.updated_at = now
            # a platform's dead-letter queue counts its own deliveries from 1 again: the message got
            # there after at least the configured number
            deliveries = max(delivery.receive_count, self.settings.queue.max_receives)
            reason = f"dead-lettered by the queue after {deliveries} deliveries"
            job.error = _with_reason(job.error, reason)
            if self.store.update(job, expected_version=expected):
                log_event("job.dead_lettered", logging.ERROR, job_id=job.id, trace_id=job.trace_id, reason=reason)
                return job
        return self.store.get(msg.job_id)

    def replay(self, job_id: str, *, enqueue: bool = True) -> Job:
        """Re-queue a dead-lettered or failed job with a fresh attempt budget (after an operator fix)."""
        for _ in range(5):
            job = self.store.get(job_id)
            if job is None:
                raise NotFound(f"job {job_id} not found")
            if job.status not in (JobStatus.dead_lettered, JobStatus.failed):
                raise InputError(f"job {job_id} is {job.status.value}; only dead_lettered or failed jobs can be replayed")
            expected = job.version
            job.status = JobStatus.queued
            job.provider_calls = 0
            job.reply = None
            job.finished_at = None
            job.updated_at = self.clock()
            if self.store.update(job, expected_version=expected):
                if enqueue:
                    self._enqueue(job)
                log_event("job.replayed", job_id=job.id, trace_id=job.trace_id)
                return job
        raise ConflictError(f"job {job_id} kept changing during replay; try again")


def _with_reason(error: JobError | None, reason: str) -> JobError:
    """Keep the last provider error (the state worth reviewing) and say why the job was dead-lettered."""
    if error is None:
        return JobError(error_class=ErrorClass.transient, message=reason)
    return error.model_copy(update={"message": f"{reason}: {error.message}"})


def job_json(job: Job) -> str:
    return json.dumps(JobView.of(job).model_dump(mode="json"), indent=2)
