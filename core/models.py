"""Domain types: the job, its lifecycle and what it records.

Pydantic models because jobs cross every boundary (HTTP, queue, store) as JSON.
"""

# no `from __future__ import annotations`: pydantic then needs no string evaluation per field (cold start)

import enum
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.job_request import (  # noqa: F401
    CANONICAL_JSON,
    MAX_INPUT_CHARS,
    MAX_METADATA_BYTES,
    MAX_METADATA_DEPTH,
    MAX_PROMPT_CHARS,
    NAME_PATTERN,
    NAME_RULE,
    WORKFLOW_PATTERN,
    JobRequest,
)
from core.prompt_record import ChunkDropped, ChunkUse, PromptAssembly  # noqa: F401

# the request and the prompt record are parts of a job; re-exported, where the rest of the code has found them
from core.safety.record import SafetyRecord
from core.tooling import ToolCall


class JobStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    dead_lettered = "dead_lettered"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.dead_lettered, JobStatus.cancelled})

# Allowed lifecycle edges, checked by every transition of `core.jobs.ledger.Ledger`. `running -> queued`
# is a deferral or a retry handed back to the queue; `queued -> succeeded` is a response-cache hit (no
# call, so never running); `running -> running` is a claim after an expired lease or another attempt;
# `failed | dead_lettered | cancelled -> queued` is an operator replay with a fresh budget; `cancelled`
# is a user's `DELETE`, from any state that is not terminal yet.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.queued: frozenset({JobStatus.running, *TERMINAL}),
    JobStatus.running: frozenset({JobStatus.running, JobStatus.queued, *TERMINAL}),
    JobStatus.succeeded: frozenset(),
    JobStatus.failed: frozenset({JobStatus.queued}),
    JobStatus.dead_lettered: frozenset({JobStatus.queued}),
    JobStatus.cancelled: frozenset({JobStatus.queued}),
}


class ErrorClass(str, enum.Enum):
    transient = "transient"
    rate_limited = "rate_limited"
    permanent = "permanent"
    malformed = "malformed"


class _Model(BaseModel):
    # schemas are built on first use, not at import: a cold start that only submits never builds
    # the worker's models (and import stays cheap on every path)
    model_config = ConfigDict(defer_build=True)


class Citation(_Model):
    id: str = Field(description="Stable citation id, `doc#chunk`.")
    source: str
    title: str | None = None
    snippet: str = ""
    valid: bool = True


class Usage(_Model):
    """Tokens and cost: of one attempt, or of a job (every billed attempt summed)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    estimated_cost_usd: float = Field(
        default=0.0,
        description="The part of cost_usd estimated (an upper bound) for attempts whose reply was lost "
        "with a worker that died mid-call: the provider may have billed them.",
    )
    cached: bool = False
    calls: int = Field(default=0, description="Billed provider calls summed here (a workflow: over every step).")


class RouteDecision(_Model):
    provider: str
    model: str
    model_id: str
    reason: str = "default route"
    rule: str | None = None


class Attempt(_Model):
    number: int
    started_at: float
    finished_at: float | None = None
    latency_ms: float | None = None
    outcome: str = "started"  # started | succeeded | error | lost (the worker died mid-call)
    error_class: ErrorClass | None = None
    status_code: int | None = None
    error: str | None = None
    trace_id: str | None = None
    provider: str | None = None
    model: str | None = None
    usage: Usage | None = Field(default=None, description="What this attempt was billed (None: not billed).")
    rejected_reply: str | None = Field(
        default=None, description="A reply refused for not matching the response format; the next call corrects it."
    )


class JobError(_Model):
    error_class: ErrorClass
    message: str
    status_code: int | None = None
    at: float = Field(default_factory=time.time)


class ProviderResult(_Model):
    """The provider's reply, persisted before any later step so a crash never pays twice."""

    text: str
    tool_calls: list[ToolCall] = Field(default_factory=list, description="Calls of the job's tools the reply made.")
    input_tokens: int = 0  # uncached input; cache reads and writes are counted apart, billed at their own prices
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    stop_reason: str | None = None
    raw_stop_reason: str | None = None


class CallbackState(_Model):
    """The completion callback of a job: queued as its own delivery once the job is terminal."""

    id: str = Field(default="", description="The webhook-id header: the same on every try of this event.")
    url: str
    state: str = Field(default="pending", description="pending | delivered | failed (tries used up, or refused)")
    event: str | None = Field(default=None, description="The terminal status it reports.")
    tries: int = 0
    status_code: int | None = Field(default=None, description="The receiver's last HTTP status.")
    error: str | None = Field(default=None, description="Why the last try failed.")
    last_at: float | None = None
    delivered_at: float | None = None


class Waiting(_Model):
    """Why a queued job is not running yet, and when it is next tried: no attempt spent, nothing failed."""

    reason: str = Field(description="What it waits for: a rate limit, an open circuit, a budget, a busy state key.")
    until: float = Field(description="When its deferred message comes back (epoch seconds).")


class ChildOf(_Model):
    """Where a workflow's child job sits: its parent, step, round (a reduce level) and node."""

    parent_id: str
    step: int
    round: int = 0
    node: int = 0
    max_calls: int | None = Field(default=None, description="The workflow's call bound, shared by its children.")


class StepState(_Model):
    """One workflow step on its parent job. `done` maps each finished child of the current round to its
    status: the fan-in set that one compare-and-set grows, so a redelivered child never counts twice."""

    id: str
    status: Literal["pending", "running", "settling", "succeeded", "failed", "cancelled"] = "pending"
    round: int = 0
    nodes: int = Field(default=0, description="Children in the current round.")
    rounds: list[int] = Field(default_factory=list, description="Children per round so far.")
    done: dict[str, str] = Field(default_factory=dict)
    inputs: list[str] = Field(default_factory=list, description="A reduce level's inputs: the previous level's ids.")
    outputs: list[str] = Field(default_factory=list, description="Ids of the children whose results are the output.")
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    gaps: list[str] = Field(default_factory=list, description="Skipped children (`on_child_failure: skip`) and why.")
    billed: dict[str, Usage] = Field(default_factory=dict, description="Each counted child's usage, every round.")
    usage: Usage = Field(default_factory=Usage)


class ThreadRef(_Model):
    """A job's place in its thread: the thread, the thread's epoch when it was submitted, and its turn number."""

    id: str
    epoch: str
    seq: int


class BatchRef(_Model):
    """A job on the batch lane: pending (waiting for a flush), submitted (in batch `id`) or returned (the
    batch could not answer it, so it runs online)."""

    model: str
    state: Literal["pending", "submitted", "returned"] = "pending"
    id: str | None = None


class WorkflowState(_Model):
    name: str = Field(description="The workflow run, `name@version`.")
    steps: list[StepState]
    current: int = 0


class Job(_Model):
    id: str
    tenant: str
    status: JobStatus = JobStatus.queued
    request: JobRequest
    request_hash: str
    idempotency_key: str | None = None
    trace_id: str
    parent_span_id: str | None = None  # the submitting caller's W3C span (traceparent), for the worker's spans
    created_at: float
    updated_at: float
    version: int = 0  # compare-and-set guard
    provider_calls: int = 0  # persisted attempt budget counter; holds across redeliveries
    lease_expires_at: float | None = None  # while running: after this, another delivery may take over
    route: RouteDecision | None = None
    prompt_template: str | None = None
    context_chunks: list[str] = Field(default_factory=list)
    reply: ProviderResult | None = None
    result_text: str | None = None
    citations: list[Citation] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    attempts: list[Attempt] = Field(default_factory=list)
    error: JobError | None = None
    finished_at: float | None = None
    callback: CallbackState | None = None
    earlier_callbacks: list[CallbackState] = Field(default_factory=list)  # still pending when the job ended again
    callback_views: dict[str, str] = Field(default_factory=dict)  # a pending callback's view of the ending it reports,
    # kept (by callback id) when the job moved on before it was delivered (a replay)
    call_in_flight_until: float | None = None  # cancelled while a provider call was in flight: its lease's end
    waiting: Waiting | None = None  # deferred (a rate limit, an open circuit, a budget): what for, and until when
    cached_from: str | None = None  # id of the job whose reply this cache hit reused
    assembly: PromptAssembly | None = None
    parent: ChildOf | None = None  # a workflow's child
    workflow: WorkflowState | None = None  # a workflow's parent
    batch: BatchRef | None = None  # on the batch lane
    thread: ThreadRef | None = None  # one turn of a thread: runs after the turns before it
    safety: SafetyRecord | None = None  # the safety policy's findings and sealed values (core.safety)


class QueueMessage(_Model):
    """What travels on every queue: a pointer to the stored job, never the prompt itself. `kind` says
    whether the delivery runs the job or sends its completion callback."""

    job_id: str
    tenant: str
    trace_id: str
    kind: Literal["job", "callback"] = "job"
    callback_id: str | None = None  # which of the job's callbacks (one per terminal state) a callback message sends

    @classmethod
    def for_job(cls, job: Job, kind: Literal["job", "callback"] = "job") -> "QueueMessage":
        if kind == "callback" and job.callback is not None:
            return cls(job_id=job.id, tenant=job.tenant, trace_id=job.trace_id, kind=kind, callback_id=job.callback.id)
        return cls(job_id=job.id, tenant=job.tenant, trace_id=job.trace_id, kind=kind)
