"""The changes the ledger's transitions apply to a job, as functions: built here, applied inside its one
compare-and-set (`core.jobs.ledger.Ledger.write`)."""

from __future__ import annotations

from collections.abc import Callable

from core.jobs.usage import job_usage
from core.models import Attempt, Citation, ErrorClass, Job, JobError, JobStatus, ProviderResult, Usage
from core.safety.record import SafetyRecord

Change = Callable[[Job], None]


def cancelled_in_flight(job: Job, attempts: list[Attempt]) -> bool:
    """The job was cancelled while this delivery's call was in flight, and nothing has billed that call yet."""
    return (
        job.status is JobStatus.cancelled
        and job.call_in_flight_until is not None
        and job.reply is None
        and bool(attempts)
        and len(attempts) >= len(job.attempts)
    )


def bill_on_cancelled(reply: ProviderResult) -> Change:
    def change(j: Job) -> None:
        j.reply, j.call_in_flight_until = reply, None
        j.usage = job_usage(j)

    return change


def succeeded(
    text: str, citations: list[Citation], usage: Usage, now: float, safety: SafetyRecord | None = None
) -> Change:
    def change(j: Job) -> None:
        j.result_text, j.citations, j.usage = text, citations, usage
        j.finished_at = now
        if safety is not None:
            j.safety = safety

    return change


def failed(
    error: JobError,
    citations: list[Citation] | None,
    usage: Usage | None,
    now: float,
    safety: SafetyRecord | None = None,
) -> Change:
    def change(j: Job) -> None:
        j.error, j.result_text = error, None
        if safety is not None:
            j.safety = safety
        if citations is not None:
            j.citations = citations
        j.usage = usage if usage is not None else job_usage(j)
        j.finished_at = now

    return change


def set_error(error: JobError) -> Change:
    def change(j: Job) -> None:
        j.error = error

    return change


def with_reason(error: JobError | None, reason: str) -> JobError:
    """Keep the last provider error (the state worth reviewing) and say why the job was dead-lettered."""
    if error is None:
        return JobError(error_class=ErrorClass.transient, message=reason)
    return error.model_copy(update={"message": f"{reason}: {error.message}"})
