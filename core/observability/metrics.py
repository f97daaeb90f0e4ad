"""The metrics port: what the lifecycle reports, as records with bounded dimensions.

Every runtime feeds the same four points: an attempt finished (`attempt`), a job reached a terminal
status (`job`), a delivery picked a queued job up (`picked`, its queue age) and a job was deferred
(`deferred`); the safety layer reports each finding (`finding`: its rule and action). Dimensions are tenant, task, model, provider, status, outcome and error class, never a
job id or a prompt, so a series count stays bounded by configuration. Sinks may be called from the
event loop or from the storage thread, so each must be thread-safe. `flush` runs at the end of a
serverless invocation, before the platform may freeze the process.
"""

from __future__ import annotations

import logging
from typing import NamedTuple, Protocol

from core.models import Attempt, Job


class AttemptRecord(NamedTuple):
    tenant: str
    task: str
    model: str
    provider: str
    model_id: str
    outcome: str  # succeeded | error | lost
    error_class: str  # "none" when it succeeded
    fallback: bool  # this attempt went to another model than the job's first
    latency_s: float
    ttft_s: float | None  # time to first token, streamed calls only
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float


class JobRecord(NamedTuple):
    tenant: str
    task: str
    model: str
    status: str
    latency_s: float  # submit to terminal
    attempts: int
    cache_hit: bool
    cost_usd: float


class Metrics(Protocol):
    def attempt(self, record: AttemptRecord, attempt: Attempt, job: Job) -> None: ...

    def job(self, record: JobRecord, job: Job) -> None: ...

    def picked(self, tenant: str, task: str, queue_age_s: float) -> None: ...

    def deferred(self, tenant: str, task: str, model: str) -> None: ...

    def finding(self, tenant: str, task: str, rule: str, action: str) -> None: ...

    def flush(self) -> None: ...


def task_of(job: Job) -> str:
    return job.request.task or "-"


def attempt_record(job: Job, attempt: Attempt, *, model_id: str, ttft_s: float | None = None) -> AttemptRecord:
    usage = attempt.usage
    first = job.attempts[0].model if job.attempts else attempt.model
    return AttemptRecord(
        tenant=job.tenant,
        task=task_of(job),
        model=attempt.model or "-",
        provider=attempt.provider or "-",
        model_id=model_id,
        outcome=attempt.outcome or "started",
        error_class=attempt.error_class.value if attempt.error_class else "none",
        fallback=attempt.model != first,
        latency_s=(attempt.latency_ms or 0.0) / 1000,
        ttft_s=ttft_s,
        input_tokens=usage.input_tokens if usage else 0,
        output_tokens=usage.output_tokens if usage else 0,
        cache_read_tokens=usage.cache_read_tokens if usage else 0,
        cache_write_tokens=usage.cache_write_tokens if usage else 0,
        cost_usd=usage.cost_usd if usage else 0.0,
    )


def job_record(job: Job) -> JobRecord:
    model = job.route.model if job.route else "-"
    end = job.finished_at or job.updated_at
    return JobRecord(
        tenant=job.tenant,
        task=task_of(job),
        model=model,
        status=job.status.value,
        latency_s=max(0.0, end - job.created_at),
        attempts=len(job.attempts),
        cache_hit=job.cached_from is not None,
        cost_usd=job.usage.cost_usd,
    )


class Fanout:
    """Every configured sink, in order; a sink that fails never fails the job (it is logged once)."""

    def __init__(self, sinks: list[Metrics]) -> None:
        self.sinks = sinks
        self._failed: set[str] = set()

    def _each(self, method: str, *args: object) -> None:
        for sink in self.sinks:
            try:
                getattr(sink, method)(*args)
            except Exception as e:
                name = f"{type(sink).__name__}.{method}"
                if name not in self._failed:
                    self._failed.add(name)
                    from core.logs import log_event

                    log_event("metrics.sink_failed", logging.ERROR, sink=name, error=repr(e)[:300])

    def attempt(self, record: AttemptRecord, attempt: Attempt, job: Job) -> None:
        self._each("attempt", record, attempt, job)

    def job(self, record: JobRecord, job: Job) -> None:
        self._each("job", record, job)

    def picked(self, tenant: str, task: str, queue_age_s: float) -> None:
        self._each("picked", tenant, task, queue_age_s)

    def deferred(self, tenant: str, task: str, model: str) -> None:
        self._each("deferred", tenant, task, model)

    def finding(self, tenant: str, task: str, rule: str, action: str) -> None:
        self._each("finding", tenant, task, rule, action)

    def flush(self) -> None:
        self._each("flush")
