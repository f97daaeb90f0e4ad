"""What the HTTP API returns: the job view (with a workflow's steps), listings and the submit answer."""

# no `from __future__ import annotations`: pydantic then needs no string evaluation per field (cold start)

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.conversation import Message
from core.models import (
    Attempt,
    CallbackState,
    Citation,
    Job,
    JobError,
    JobStatus,
    PromptAssembly,
    RouteDecision,
    StepState,
    Usage,
    Waiting,
)
from core.safety.placeholders import Reveal, reveal_json
from core.safety.record import SafetyView
from core.structured import parsed
from core.tooling import ToolCall


class _Model(BaseModel):
    model_config = ConfigDict(defer_build=True)


class ChildCounts(_Model):
    total: int = Field(description="Children started so far, over every round.")
    succeeded: int
    failed: int
    running: int = Field(description="Started and not finished yet.")


class StepPosition(_Model):
    step: int = Field(description="The step's index in the workflow (0 first).")
    round: int = Field(description="The reduce level (0 for a map or a chain step).")
    node: int = Field(description="This child's index in its round.")


class StepView(_Model):
    id: str
    status: str = Field(
        description="pending | running | settling (its last child finished) | succeeded | failed | cancelled"
    )
    round: int = Field(description="The reduce level being combined (0 for a map or a chain step).")
    children: ChildCounts
    gaps: list[str] = Field(default_factory=list, description="Children skipped under `on_child_failure: skip`.")
    usage: Usage

    @classmethod
    def of(cls, s: StepState) -> "StepView":
        running = max(0, s.nodes - len(s.done)) if s.status == "running" else 0
        return cls(
            id=s.id,
            status=s.status,
            round=s.round,
            gaps=s.gaps,
            usage=s.usage,
            children=ChildCounts(total=s.total, succeeded=s.succeeded, failed=s.failed, running=running),
        )


class Partial(_Model):
    """A streaming job's output so far (the current attempt's): `seq` counts its writes."""

    text: str
    seq: int
    attempt: int
    retracted_at: int | None = Field(
        default=None,
        description="The write at which the safety policy took back text already served: text shown from writes "
        "before it must be replaced by this `text`.",
    )


class JobView(_Model):
    """What `GET /v1/jobs/{id}` returns; also what `alto ask --json` prints."""

    job_id: str
    status: JobStatus
    tenant: str
    task: str | None
    result: str | None
    citations: list[Citation]
    invalid_citations: list[str] = Field(
        default_factory=list, description="Ids the answer cited that were not among the chunks supplied."
    )
    usage: Usage
    stop_reason: str | None = Field(
        default=None, description="Why the model stopped: end_turn, max_tokens (the answer is cut), refusal, other."
    )
    route: RouteDecision | None
    prompt: PromptAssembly | None = Field(default=None, description="Template, chunk ids and token counts per part.")
    attempts: list[Attempt]
    error: JobError | None
    callback: CallbackState | None = Field(default=None, description="The completion callback's delivery.")
    workflow: str | None = Field(default=None, description="The workflow run, `name@version`.")
    steps: list[StepView] | None = Field(default=None, description="A workflow's steps, in order.")
    parent_id: str | None = Field(default=None, description="The workflow job this child job belongs to.")
    position: StepPosition | None = Field(default=None, description="Where this child job sits in its workflow.")
    partial: Partial | None = Field(default=None, description="A streaming job's text so far, while it runs.")
    tool_calls: list[ToolCall] = Field(
        default_factory=list,
        description="With `tools`: the calls the model made (`stop_reason` is tool_use). Run them and send their "
        "results in the next job's last turn, after this reply as an assistant turn with these calls.",
    )
    output: Any = Field(
        default=None, description="With a `response_format`: the reply's JSON, parsed (checked against the schema)."
    )
    waiting: Waiting | None = Field(
        default=None,
        description="A queued job deferred without spending an attempt: "
        "what it waits for (a rate limit, an open circuit, a budget) and until when.",
    )
    safety: SafetyView | None = Field(
        default=None, description="The safety policy the job ran under and what its checks found (never the text)."
    )
    lane: str = Field(default="online", description="online, or batch (the provider's batch API).")
    batch_id: str | None = Field(default=None, description="The provider's batch this job was sent in.")
    trace_id: str
    created_at: float
    updated_at: float
    finished_at: float | None

    @classmethod
    def of(cls, job: Job, partial: Partial | None = None, reveal: Reveal | None = None) -> "JobView":
        """The view of `job`; `reveal` restores the values a safety policy redacted (`core.safety`)."""
        result, calls = job.result_text, (job.reply.tool_calls if job.reply is not None else [])
        if reveal is not None:
            result = reveal(result) if result is not None else None
            calls = [c.model_copy(update={"arguments": reveal_json(c.arguments, reveal)}) for c in calls]
            partial = partial.model_copy(update={"text": reveal(partial.text)}) if partial is not None else None
        succeeded = job.status is JobStatus.succeeded
        return cls(
            job_id=job.id,
            status=job.status,
            tenant=job.tenant,
            task=job.request.task,
            result=result,
            citations=job.citations,
            invalid_citations=[c.id for c in job.citations if not c.valid],
            usage=job.usage,
            stop_reason=job.reply.stop_reason if job.reply is not None else None,
            route=job.route,
            prompt=job.assembly,
            attempts=job.attempts,
            error=job.error,
            callback=job.callback,
            workflow=job.workflow.name if job.workflow else None,
            steps=[StepView.of(s) for s in job.workflow.steps] if job.workflow else None,
            parent_id=job.parent.parent_id if job.parent else None,
            position=StepPosition(step=job.parent.step, round=job.parent.round, node=job.parent.node)
            if job.parent
            else None,
            partial=partial,
            tool_calls=calls if succeeded else [],
            output=parsed(job.request.response_format, result) if succeeded else None,
            safety=SafetyView.of(job.safety),
            waiting=job.waiting if job.status is JobStatus.queued else None,
            lane="batch" if job.batch is not None and job.batch.state != "returned" else "online",
            batch_id=job.batch.id if job.batch is not None else None,
            trace_id=job.trace_id,
            created_at=job.created_at,
            updated_at=job.updated_at,
            finished_at=job.finished_at,
        )


class JobList(_Model):
    """What `GET /v1/jobs` returns: a page of the tenant's jobs, newest first (or of a workflow's children)."""

    jobs: list[JobView]
    next_cursor: str | None = Field(
        default=None,
        description="Pass as `cursor` for the next page; null on the "
        "last. Stable while jobs are created: a later page never repeats or skips one.",
    )


class ThreadView(_Model):
    """What `GET /v1/threads/{id}` returns: the thread's turns, oldest first, as a job's `messages` takes them."""

    thread_id: str
    messages: list[Message] = Field(description="Every succeeded turn, with its reply (a thread keeps 400).")
    jobs: list[str] = Field(description="The succeeded jobs whose turns these are, in order.")
    pending: list[str] = Field(description="Jobs submitted on the thread and not settled yet, in order.")


class ThreadErased(_Model):
    thread_id: str
    erased_jobs: list[str] = Field(description="The jobs whose prompts, messages and replies were blanked.")
    erased_objects: int = Field(
        default=0, description="Objects deleted from the blob store: the images its turns sent, its spilled streams."
    )


class SubmitResponse(_Model):
    job_id: str
    status: JobStatus
    status_url: str


class UsageRow(_Model):
    """Spend summed over one group (the dimensions asked for are set; the rest absent)."""

    model_config = ConfigDict(defer_build=True, extra="allow")  # tenant, task, model, lane, day as grouped

    calls: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float
    saved_prompt_cache_usd: float = Field(description="Cache reads at the input price, less cache writes' premium.")
    saved_response_cache_usd: float = Field(description="What the jobs a response-cache hit reused had cost.")
    saved_batch_usd: float = Field(
        default=0.0, description="The batch lane's discount on what its calls would have cost."
    )


class UsageReport(_Model):
    """What `GET /v1/usage` returns: spend since a UTC day, biggest first (a tenant's key: its own; an
    operator's: every tenant's, or `?tenant=`'s)."""

    since: str
    group_by: list[str]
    rows: list[UsageRow]


class OutcomeRow(_Model):
    """Job endings summed over one group (the dimensions asked for are set; the rest absent)."""

    model_config = ConfigDict(defer_build=True, extra="allow")  # tenant, task, status, model, day as grouped

    jobs: int = Field(description="Jobs that ended (a replayed job that ends again counts again).")
    mean_latency_s: float | None = Field(description="Submit to end, averaged.")
    p50_latency_s: float | None = Field(
        description="Median submit-to-end time, from a histogram (bucket-interpolated)."
    )
    p90_latency_s: float | None
    p99_latency_s: float | None


class OutcomeReport(_Model):
    """What `GET /v1/outcomes` returns: how jobs ended since a UTC day, most first."""

    since: str
    group_by: list[str]
    rows: list[OutcomeRow]


class Me(_Model):
    """What `GET /v1/me` returns: whose key this is, and whose data it reads."""

    tenant: str | None = Field(description="The key's tenant; null for an operator's key.")
    operator: bool = Field(description="An operator's key: reads and acts on every tenant's jobs, submits none.")
    tenants: list[str] = Field(description="The tenants this key reads.")


class ModelState(_Model):
    """One catalogued model's shared governance state: its circuit and its rate buckets."""

    model: str
    provider: str
    model_id: str
    circuit: dict[str, Any] = Field(description="`state` closed, open or half_open, with failures and cooldown.")
    rate: dict[str, Any] = Field(description="Configured limits, tokens available now per bucket, slots in use.")


class ModelStates(_Model):
    models: list[ModelState]
