"""What a saved reply makes of its job: citations, usage and cost, output checks. Pure, so the attempt that
saves a reply can save its job's result in the same write, and a redelivery can judge a saved reply alike."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from core.chunks import ContextChunk
from core.errors import GuardrailViolation
from core.guardrails import check_output
from core.jobs.usage import job_usage
from core.models import Citation, ErrorClass, Job, JobError, ProviderResult, Usage
from core.prompting import extract_citations
from core.safety.layer import explain
from core.safety.record import SafetyRecord

if TYPE_CHECKING:
    from core.config.worker import Settings
    from core.safety.layer import Safety


class Verdict(NamedTuple):
    """Served (error None) or refused by an output check, with what the job is billed either way."""

    text: str
    citations: list[Citation]
    usage: Usage
    error: JobError | None = None
    rule: str | None = None
    safety: SafetyRecord | None = None  # the job's findings with the output's, its values sealed


class Verdicts:
    def __init__(self, settings: Settings, safety: Safety | None = None) -> None:
        self.settings = settings
        self.safety = safety

    def of(self, job: Job, text: str, chunks: list[ContextChunk]) -> Verdict:
        """The reply judged: citations, usage, and the output checks' error (a guardrail, or a `block` finding of
        the job's safety policy, on its answer or by its moderation: billed, kept in the record, not served).
        `text` is the reply as kept (`kept` screened it and noted its findings on the job)."""
        record = job.safety
        blocked = record.blocked if record is not None else None
        citations = extract_citations(text, chunks)
        usage = job_usage(job, self.settings.models.get(job.route.model) if job.route else None)
        if blocked is not None and record is not None:
            error = JobError(
                error_class=ErrorClass.permanent, message=explain(record.policy, blocked) + " (the answer)"
            )
            return Verdict(text, citations, usage, error, blocked.rule, record)
        try:
            check_output(text, citations, self.settings.guardrails)
        except GuardrailViolation as e:
            error = JobError(error_class=ErrorClass.permanent, message=str(e))
            return Verdict(text, citations, usage, error, e.rule, record)
        return Verdict(text, citations, usage, safety=record)

    def kept(self, job: Job, reply: ProviderResult) -> ProviderResult:
        """The reply as it may be stored, its text redacted where the job's policy masks what the model wrote, and
        what the output checks found noted on the job. Every path that stores a reply (an attempt, the batch lane,
        a cache hit) passes it here once, before `of` judges it."""
        if self.safety is None:
            return reply
        text, job.safety, _ = self.safety.output(job, reply.text)
        return reply if text == reply.text else reply.model_copy(update={"text": text})

    def held(self, job: Job) -> bool:
        """A reply whose result waits for its moderation: saved alone, finished by the finalizer."""
        return self.safety is not None and self.safety.moderates(job, "output")
