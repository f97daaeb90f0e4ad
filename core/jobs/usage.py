"""A job's usage: every billed attempt summed, lost attempts at an estimated upper bound.

An attempt is billed when the provider answered 200 (served or not: a cut or empty reply was still
generated). An attempt whose worker died mid-call is `lost`: nobody knows whether the provider
replied, so it is counted at the most it can have cost and flagged as estimated: its input exactly as the
provider counted it when an earlier attempt of the same prompt on the same model was billed (cache reads
and writes included), else our count raised by the model's `token_margin`; and its full output allowance,
the one thing nobody can know. Errors (4xx, 5xx, timeouts) are not billed.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from core.models import Attempt, Job, ProviderResult, Usage

if TYPE_CHECKING:  # the ledger, on the API's cold path too, sums usage; only workers price it
    from core.config.worker import ModelConfig

LOST = "the worker stopped during this call (crash or kill); the provider may have replied and billed it"


def billed(result: ProviderResult, model: ModelConfig | None) -> Usage:
    cost = (
        model.cost(result.input_tokens, result.output_tokens, result.cache_read_tokens, result.cache_write_tokens)
        if model
        else 0.0
    )
    return Usage(
        input_tokens=result.input_tokens,
        output_tokens=result.output_tokens,
        cache_read_tokens=result.cache_read_tokens,
        cache_write_tokens=result.cache_write_tokens,
        cost_usd=cost,
    )


def mark_lost(job: Job, models: dict[str, ModelConfig], now: float) -> int:
    """Attempts that started but never finished: `lost`, with their estimated cost. Returns how many."""
    lost = [a for a in job.attempts if a.outcome == "started"]
    for a in lost:
        a.outcome, a.finished_at, a.error = "lost", now, LOST
        a.usage = _estimate(job, a, models.get(a.model or ""))
    return len(lost)


def _estimate(job: Job, attempt: Attempt, model: ModelConfig | None) -> Usage:
    assembly = job.assembly
    output_tokens = assembly.reserved_output_tokens if assembly else 0
    seen = next(
        (
            a.usage
            for a in job.attempts
            if a is not attempt
            and a.model == attempt.model
            and a.usage is not None
            and a.outcome == "succeeded"
            and a.usage.estimated_cost_usd == 0
        ),
        None,
    )
    if seen is not None:  # the same prompt, billed before: its input as the provider counted it
        inputs = (seen.input_tokens, seen.cache_read_tokens, seen.cache_write_tokens)
    else:
        counted = assembly.input_tokens if assembly else 0
        inputs = (math.ceil(counted * (1 + (model.token_margin if model else 0.0))), 0, 0)
    cost = model.cost(inputs[0], output_tokens, inputs[1], inputs[2]) if model else 0.0
    return Usage(
        input_tokens=inputs[0],
        output_tokens=output_tokens,
        cache_read_tokens=inputs[1],
        cache_write_tokens=inputs[2],
        cost_usd=cost,
        estimated_cost_usd=cost,
    )


def job_usage(job: Job, reply_model: ModelConfig | None = None) -> Usage:
    """The sum over billed attempts (a response-cache hit: nothing was sent, nothing billed). A reply
    saved by a version that did not bill attempts is billed from the reply itself."""
    if job.cached_from is not None:
        return Usage(cached=True)
    parts = [a.usage for a in job.attempts if a.usage is not None]
    if not parts and job.reply is not None:
        parts = [billed(job.reply, reply_model)]
    return total(parts, calls=len(parts))


def total(parts: list[Usage], *, calls: int | None = None) -> Usage:
    """Usages summed; `calls` counts billed calls (an attempt's own usage is one call)."""
    return Usage(
        input_tokens=sum(u.input_tokens for u in parts),
        output_tokens=sum(u.output_tokens for u in parts),
        cache_read_tokens=sum(u.cache_read_tokens for u in parts),
        cache_write_tokens=sum(u.cache_write_tokens for u in parts),
        cost_usd=round(sum(u.cost_usd for u in parts), 10),
        estimated_cost_usd=round(sum(u.estimated_cost_usd for u in parts), 10),
        calls=sum(u.calls for u in parts) if calls is None else calls,
    )
