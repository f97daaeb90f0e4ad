"""One attempt: claim, one provider call, and a typed result that says what follows.

The claim (attempt count and lease, persisted) comes before the call; the reply is persisted before
anything after it. A failed call is classified and becomes exactly one decision: `Fallback` (a typed
fallback model takes the next attempt), `RetryNow` (back off in process), `RetryLater` (hand the job
back to the queue), `Failed` (permanent), `Exhausted` (the persisted budget is spent). `Replied` and
`Lost` (a compare-and-set lost to another delivery) complete the set. `decide` is pure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from core.assembly import Assembled
from core.chunks import ContextChunk
from core.classify import Classification, classify
from core.config.api import GovernanceConfig
from core.config.worker import ModelConfig, Settings
from core.errors import ProviderError
from core.jobs.admission import MIN_CALL_S, Ticket
from core.jobs.aftermath import Aftermath
from core.jobs.bills import Bills
from core.jobs.heartbeat import Heartbeat
from core.jobs.ledger import Ledger
from core.jobs.offload import Offload
from core.jobs.replies import FormatMismatch, check_reply, format_mismatch, last_rejected, unwrapped, usage_is_sane
from core.jobs.usage import billed
from core.jobs.verdict import Verdict, Verdicts
from core.logs import Timer, log_event
from core.models import Attempt, ErrorClass, Job, JobError, ProviderResult, RouteDecision, Usage
from core.observability.metrics import Metrics, attempt_record
from core.providers.base import ChatRequest, Streamer
from core.providers.registry import ProviderRegistry
from core.retry import retry_delay
from core.routing import RoutePlan
from core.streaming.log import StreamLog
from core.streaming.writer import StreamWriter
from core.structured import REJECTED_CHARS, correction


class Replied(NamedTuple):
    result: ProviderResult
    chunks: list[ContextChunk]
    verdict: Verdict | None = None  # set when the reply and the job's result were saved in one write


class Fallback(NamedTuple):
    decision: RouteDecision
    error: JobError


class RetryNow(NamedTuple):
    delay_s: float
    error: JobError


class RetryLater(NamedTuple):
    delay_s: float
    error: JobError


class Failed(NamedTuple):
    error: JobError


class Exhausted(NamedTuple):
    error: JobError
    reason: str = "attempt budget exhausted"


class Lost(NamedTuple):
    detail: str


AttemptResult = Replied | Fallback | RetryNow | RetryLater | Failed | Exhausted | Lost


def typed_fallback(
    exc: BaseException, error_class: ErrorClass, plan: RoutePlan, tried: set[str], fits: Callable[[str], bool]
) -> RouteDecision | None:
    """The next untried model of the chain this error calls for (429/529, refusal, context overflow, a
    reply cut at max_tokens on a route with on_max_tokens: fallback)."""
    status = exc.status_code if isinstance(exc, ProviderError) else None
    if isinstance(exc, ProviderError) and exc.truncated:
        if plan.route.on_max_tokens != "fallback":
            return None
        kind = "max_tokens"
    elif isinstance(exc, ProviderError) and exc.context_overflow:
        kind = "context_overflow"
    elif isinstance(exc, ProviderError) and exc.content_policy:
        kind = "content_policy"
    elif error_class is ErrorClass.rate_limited or status in (503, 529):  # rate limit or overload
        kind = "rate_limited"
    else:
        return None
    for d in plan.fallbacks.get(kind, []):
        if d.model not in tried and (kind != "context_overflow" or fits(d.model)):
            return d
    return None


def decide(
    c: Classification,
    error: JobError,
    *,
    calls: int,
    gov: GovernanceConfig,
    fallback: RouteDecision | None,
    time_left_s: float,
) -> AttemptResult:
    """What follows a failed call, given the persisted call count and the time left in this invocation."""
    if fallback is not None and calls < gov.max_attempts:
        return Fallback(fallback, error)
    if not c.retryable:
        return Failed(error)
    if calls >= gov.max_attempts:
        return Exhausted(error)
    delay = retry_delay(
        calls,
        retry_after_s=c.retry_after_s,
        base_s=gov.backoff_base_s,
        cap_s=gov.backoff_max_s,
        retry_after_cap_s=gov.retry_after_cap_s,
    )
    if delay + MIN_CALL_S < time_left_s and delay <= gov.in_process_wait_s:
        return RetryNow(delay, error)
    return RetryLater(delay, error)


def chat_request(
    decision: RouteDecision, assembled: Assembled, job: Job, max_tokens: int, model: ModelConfig
) -> ChatRequest:
    """What the provider is sent for this job and model (online, or as one request of a batch)."""
    prompt, r = assembled.prompt, assembled.record
    # what stays the same across questions: the system text, the earlier turns, the template and the context
    stable = r.system_tokens + r.history_tokens + r.template_tokens + r.context_tokens
    cache = prompt.stable_chars if model.cache_min_tokens and stable >= model.cache_min_tokens else 0
    # a conversation's next turn starts with this one's system text and earlier turns: worth a breakpoint of its own
    turns = model.cache_min_tokens and prompt.history and r.system_tokens + r.history_tokens >= model.cache_min_tokens
    history, user = prompt.history, prompt.user
    if (rejected := last_rejected(job)) is not None and rejected.rejected_reply is not None:  # the corrective call
        added, user = correction(
            prompt.user, rejected.rejected_reply, rejected.error or "", prompt.results, prompt.images
        )
        history, cache = (*history, *added), 0
    return ChatRequest(
        model_id=decision.model_id,
        system=prompt.system,
        user=user,
        question=job.request.ask().question,
        max_tokens=max_tokens,
        context=assembled.chunks,
        cache_prefix_chars=cache,
        history=history,
        cache_history=bool(turns),
        response_format=job.request.response_format,
        results=prompt.results if rejected is None else (),
        images=prompt.images if rejected is None else (),
        tools=tuple(job.request.tools or ()),
        tool_choice=job.request.tool_choice,
        api=model.api,
    )


class Attempter:
    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        providers: ProviderRegistry,
        router_fits: Callable[..., bool],
        verdicts: Verdicts,
        bills: Bills,
        aftermath: Aftermath,
        *,
        store_io: Offload,
        state_io: Offload,
        streams: StreamLog,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.providers = providers
        self.fits = router_fits
        self.verdicts = verdicts  # so a reply and its job's result are saved in one write
        self.bills = bills  # every billed call's usage, for spend reports
        self.aftermath = aftermath  # when that write ends the job
        self.store_io = store_io
        self.state_io = state_io
        self.both_io = store_io.with_(state_io)  # a call that writes to the job store and the state store
        self.streams = streams  # a streaming job's partial output
        self.metrics = metrics
        self.clock = clock

    async def run(
        self, job: Job, ticket: Ticket, plan: RoutePlan, assembled: Assembled, deadline: float, tried: set[str]
    ) -> AttemptResult:
        decision = ticket.decision
        attempt = await self._claim(job, ticket, assembled, deadline)
        if attempt is None:
            return Lost("lost the claim race to another delivery")
        timer = Timer()
        max_tokens = min(plan.route.max_tokens, ticket.model.max_output_tokens)
        call_deadline = min(self.clock() + self.settings.providers[decision.provider].timeout_s, deadline)
        heartbeat = Heartbeat(
            self.ledger,
            job,
            lease_s=self.settings.governance.lease_s,
            deadline=deadline,
            store_io=self.store_io,
            clock=self.clock,
        )
        writer = self._writer(job, attempt.number)
        try:
            call = self._call(
                decision,
                chat_request(decision, assembled, job, max_tokens, ticket.model),
                max(0.1, call_deadline - self.clock()),
                writer,
            )
            result = unwrapped(job.request.response_format, await heartbeat.run(call, call_deadline=call_deadline))
        except asyncio.CancelledError:
            raise  # the admission's exit abandons the unsettled gate
        except Exception as exc:  # classified; never lost
            if writer is not None:
                await writer.close()  # what the cut attempt said stays visible until the next one resets it
            if isinstance(exc, ProviderError) and exc.partial is not None:
                attempt.usage = billed(exc.partial, ticket.model)  # a failed stream was generated, so billed
            return await self._failed(exc, job, attempt, ticket, plan, assembled, deadline, tried, timer, writer)
        mismatch = format_mismatch(job, result)
        if writer is not None:
            provider = self.providers.get(decision.provider)
            streamed = isinstance(provider, Streamer) and not job.request.whole  # as _call chose
            if not streamed and mismatch is None:  # a provider that can't stream, or a checked structured reply
                writer.add(result.text)  # the whole text as one delta
            await writer.close()
        sane = usage_is_sane(result, max_tokens=max_tokens, model=ticket.model)
        attempt.usage = billed(result, ticket.model) if sane else None  # a 200 is billed, served or not
        try:
            check_reply(result, max_tokens=max_tokens, model=ticket.model, route=plan.route)
        except ProviderError as exc:  # empty, impossible usage, or cut where the route refuses cut replies
            return await self._failed(exc, job, attempt, ticket, plan, assembled, deadline, tried, timer, writer)
        if mismatch is not None:
            attempt.rejected_reply = result.text[:REJECTED_CHARS]
            return await self._failed(mismatch, job, attempt, ticket, plan, assembled, deadline, tried, timer, writer)
        return await self._replied(job, attempt, ticket, result, assembled, timer, writer)

    async def _claim(self, job: Job, ticket: Ticket, assembled: Assembled, deadline: float) -> Attempt | None:
        """Spend one attempt of the persisted budget and take the lease, before paying for the call."""
        decision = ticket.decision
        attempt = await self.store_io(
            self.ledger.claim,
            job,
            decision,
            lease_until=min(self.clock() + self.settings.governance.lease_s, deadline),
            template=assembled.prompt.template,
            chunk_ids=[c.id for c in assembled.chunks],
            assembly=assembled.record,
        )
        if attempt is not None and (
            len(job.attempts) == 1 or job.attempts[-2].model != decision.model or ticket.gate.kind == "probe"
        ):
            log_event("route.decided", provider=decision.provider, model=decision.model, reason=decision.reason)
        return attempt

    async def _replied(
        self,
        job: Job,
        attempt: Attempt,
        ticket: Ticket,
        result: ProviderResult,
        assembled: Assembled,
        timer: Timer,
        writer: StreamWriter | None,
    ) -> AttemptResult:
        """A usable reply: governance settled, then the reply (and, in the same write, the job's result) saved."""
        decision = ticket.decision
        await ticket.report(None)
        _finished(attempt, self.clock(), timer, "succeeded")
        self._observe(job, attempt, ticket.model, writer)
        # the call is billed whether or not its reply lands: budget and usage ledger first, so a job seen
        # terminal has its cost counted already (and a reply that loses its write is still counted once)
        await ticket.correct_tokens(result)
        await ticket.charge(attempt.usage.cost_usd if attempt.usage else 0.0)
        if writer is not None and writer.retracted and job.safety is not None:
            job.safety.retracted = True
        result = self.verdicts.kept(job, result)  # screened: no stored copy holds a masked value
        # held: finished by the finalizer once the answer is moderated
        verdict = None if self.verdicts.held(job) else self.verdicts.of(job, result.text, assembled.chunks)
        if not await self._bill_and_save(job, ticket, attempt.usage, result, verdict):
            return Lost("could not persist the provider reply")
        written = verdict if job.status.terminal else None  # else only the reply landed (a race): finalize writes
        log_event(
            "provider.reply",
            provider=decision.provider,
            model=decision.model,
            latency_ms=attempt.latency_ms,
            input_tokens=result.input_tokens,
            output_tokens=result.output_tokens,
            attempt=attempt.number,
        )
        return Replied(result, assembled.chunks, written)

    async def _bill_and_save(
        self, job: Job, ticket: Ticket, usage: Usage | None, result: ProviderResult, verdict: Verdict | None
    ) -> bool:
        """The call's usage, then its reply with the job's result and, if that ends the job, its aftermath: one
        offloaded call (the embedded stores: one group, so they commit together)."""

        def both() -> bool:
            if usage is not None:
                self.bills.add(job, ticket.decision.model, ticket.model, usage)
            return self.aftermath.ended(self.ledger.save_reply(job, result, verdict), job)

        return await self.both_io(both)

    def _writer(self, job: Job, attempt: int) -> StreamWriter | None:
        if not job.request.stream:
            return None
        guard = self.verdicts.safety.guard(job) if self.verdicts.safety is not None else None
        return StreamWriter(
            self.streams, job.id, attempt, flush_s=self.settings.stream.flush_ms / 1000, io=self.state_io, guard=guard
        )

    def _call(
        self, decision: RouteDecision, request: ChatRequest, timeout_s: float, writer: StreamWriter | None
    ) -> Awaitable[ProviderResult]:
        provider = self.providers.get(decision.provider)
        # a structured reply (or tool calls) is checked whole before anyone sees it: one delta once it passes
        if writer is not None and isinstance(provider, Streamer) and not request.whole:
            return provider.stream(request, timeout_s=timeout_s, on_delta=writer.add)
        return provider.generate(request, timeout_s=timeout_s)

    def _observe(self, job: Job, attempt: Attempt, model: ModelConfig, writer: StreamWriter | None) -> None:
        first = writer.first_at if writer is not None else None
        ttft = max(0.0, first - attempt.started_at) if first is not None else None
        self.metrics.attempt(attempt_record(job, attempt, model_id=model.model_id, ttft_s=ttft), attempt, job)

    async def _failed(
        self,
        exc: Exception,
        job: Job,
        attempt: Attempt,
        ticket: Ticket,
        plan: RoutePlan,
        assembled: Assembled,
        deadline: float,
        tried: set[str],
        timer: Timer,
        writer: StreamWriter | None = None,
    ) -> AttemptResult:
        c = classify(exc)
        await ticket.report(None if isinstance(exc, FormatMismatch) else c.error_class)  # the provider is healthy
        await ticket.charge(attempt.usage.cost_usd if attempt.usage else 0.0)  # a cut stream was billed
        await self.bills.account(job, ticket.decision.model, ticket.model, attempt.usage)
        _finished(attempt, self.clock(), timer, "error")
        attempt.error_class = c.error_class
        attempt.status_code = exc.status_code if isinstance(exc, ProviderError) else None
        attempt.error = str(exc)[:1000]
        self._observe(job, attempt, ticket.model, writer)
        body = (exc.body if isinstance(exc, ProviderError) else None) or ""
        log_event(
            "provider.error",
            logging.WARNING,
            provider=ticket.decision.provider,
            model=ticket.decision.model,
            error_class=c.error_class.value,
            status_code=attempt.status_code,
            latency_ms=attempt.latency_ms,
            attempt=attempt.number,
            body=body[:2000] if c.error_class is ErrorClass.malformed else None,
        )
        error = JobError(error_class=c.error_class, message=attempt.error, status_code=attempt.status_code)
        if isinstance(exc, FormatMismatch) and exc.final:
            return Failed(error)
        fallback = typed_fallback(
            exc, c.error_class, plan, tried, lambda name: self.fits(name, assembled.input_tokens, plan.route)
        )
        return decide(
            c,
            error,
            calls=job.provider_calls,
            gov=self.settings.governance,
            fallback=fallback,
            time_left_s=deadline - self.clock(),
        )


def _finished(attempt: Attempt, now: float, timer: Timer, outcome: str) -> None:
    attempt.finished_at = now
    attempt.latency_ms = timer.ms
    attempt.outcome = outcome
