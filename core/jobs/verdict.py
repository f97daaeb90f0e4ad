"""What a saved reply makes of its job: citations, usage and cost, output checks. Pure, so the attempt that
saves a reply can save its job's result in the same write, and a redelivery can judge a saved reply alike."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from core.chunks import ContextChunk
from core.errors import GuardrailViolation
from core.guardrails import check_output
from core.jobs.usage import job_usage
from core.models import Citation, ErrorClass, Job, JobError, Usage
from core.prompting import extract_citations

if TYPE_CHECKING:
    from core.config.worker import Settings


class Verdict(NamedTuple):
    """Served (error None) or refused by an output check, with what the job is billed either way."""

    text: str
    citations: list[Citation]
    usage: Usage
    error: JobError | None = None
    rule: str | None = None


class Verdicts:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def of(self, job: Job, text: str, chunks: list[ContextChunk]) -> Verdict:
        citations = extract_citations(text, chunks)
        usage = job_usage(job, self.settings.models.get(job.route.model) if job.route else None)
        try:
            check_output(text, citations, self.settings.guardrails)
        except GuardrailViolation as e:  # paid for and kept in the record; not served
            return Verdict(text, citations, usage, JobError(error_class=ErrorClass.permanent, message=str(e)), e.rule)
        return Verdict(text, citations, usage)
