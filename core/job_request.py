"""The body of `POST /v1/jobs`: one call (a prompt, or a conversation) or a workflow, validated at the boundary.

Pydantic, strict and closed: a typo or a wrong type is an error naming the field, never ignored.
"""

# no `from __future__ import annotations`: pydantic then needs no string evaluation per field (cold start)

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from core.conversation import MAX_TURNS, Ask, Message, Turn, pairing_problem
from core.images import Image
from core.structured import ResponseFormat
from core.tooling import MAX_TOOLS, NamedChoice, Tool, ToolChoice
from core.validation import checked, json_depth

# tenant and collection names: they become parts of keys and paths (snapshots, blob prefixes), so no
# separators, no dot-dot, no spaces
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
NAME_RULE = "1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
WORKFLOW_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}(@[0-9]{1,6})?$"
MAX_INPUT_CHARS = 8_000_000
MAX_PROMPT_CHARS = 1_000_000  # a prompt, or a conversation's turns and system text together
MAX_METADATA_DEPTH = 8
MAX_METADATA_BYTES = 16_384

# the canonical form hashed for fingerprints, made once (json.dumps with arguments builds an encoder a call)
CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


class JobRequest(BaseModel):
    """The body of `POST /v1/jobs`. Unknown fields are rejected so typos don't pass silently."""

    # strict: `"cache": "no"` is an error, not False; extra="forbid": a typo is an error, not ignored
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        str_strip_whitespace=False,
        defer_build=True,
        json_schema_extra={
            "oneOf": [  # one call (a prompt or a conversation), or a workflow: what the validators below check
                {
                    "required": ["prompt"],
                    "not": {
                        "anyOf": [{"required": ["workflow"]}, {"required": ["inputs"]}, {"required": ["messages"]}]
                    },
                },
                {
                    "required": ["messages"],
                    "not": {"anyOf": [{"required": ["workflow"]}, {"required": ["inputs"]}, {"required": ["prompt"]}]},
                },
                {
                    "required": ["workflow", "inputs"],
                    "not": {
                        "anyOf": [
                            {"required": ["prompt"]},
                            {"required": ["messages"]},
                            {"required": ["system"]},
                            {"required": ["response_format"]},
                            {"required": ["tools"]},
                        ]
                    },
                },
            ]
        },
    )

    workflow: str | None = Field(
        default=None,
        pattern=WORKFLOW_PATTERN,
        description="Run a configured multi-step workflow instead of one call: `name@version`, or `name` for its "
        "newest version. Give its inputs in `inputs`, and no `prompt`.",
    )
    system: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_PROMPT_CHARS,
        description="The system text for this job, in place of the route's template's.",
    )
    messages: list[Message] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_TURNS,
        description="A conversation instead of `prompt`: user and assistant turns, oldest first, ending with the "
        "user turn to answer. Retrieval (with `collection`) grounds that last turn.",
    )
    prompt: str = Field(
        default="",
        max_length=MAX_PROMPT_CHARS,
        validate_default=True,
        json_schema_extra={"minLength": 1, "pattern": r"\S"},  # what the validator below enforces
        description="The question or instruction (required unless `messages` or `workflow` is given).",
    )
    inputs: dict[str, str] = Field(
        default_factory=dict,
        description="A workflow's inputs by name: the text itself, or `blob:KEY` for a document "
        "in the blob store (PDF, HTML, Markdown and text are extracted).",
    )
    max_tokens: int | None = Field(
        default=None,
        gt=0,
        le=1_000_000,
        description="Output tokens at most; lowers (never raises) the route's max_tokens.",
    )
    task: str | None = Field(default=None, max_length=128, description="Task name used by routing rules.")
    context_query: str | None = Field(
        default=None,
        max_length=10_000,
        description="Retrieval query; defaults to the prompt when a collection is used.",
    )
    collection: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description=f"Collection to retrieve context from ({NAME_RULE}); defaults to the tenant's.",
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description=f"Free-form tags, stored with the job: at most {MAX_METADATA_DEPTH} levels deep and "
        f"{MAX_METADATA_BYTES:,} bytes as JSON.",
    )
    callback_url: str | None = Field(
        default=None,
        max_length=2048,
        json_schema_extra={"format": "uri", "pattern": "^https?://"},  # checked below
        description="A public http(s) URL POSTed the job view, signed, once the job is terminal.",
    )
    cache: bool = Field(default=True, description="false: bypass the response cache (read and write) for this job.")
    lane: Literal["online", "batch"] = Field(
        default="online",
        description="batch: not urgent; sent through the provider's batch API at its discount "
        "(results within the provider's 24 h).",
    )
    stream: bool = Field(
        default=False,
        description="Persist the output as it is generated: read it with "
        "`GET /v1/jobs/{id}/events` (SSE) or `?after=SEQ&wait_s=N`.",
    )

    response_format: ResponseFormat | None = Field(
        default=None,
        description='A JSON reply: `{"type": "json_schema", "schema": {...}}` (checked against the schema, with one '
        'corrective call on a mismatch) or `{"type": "json_object"}`. The view\'s `output` holds the parsed object.',
    )

    thread_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{1,128}$",
        description="Keep the conversation on the service: the thread's earlier turns go before this job's, which "
        "are added (with the reply) once it succeeds. Jobs on one thread run in the order they were submitted.",
    )
    tools: list[Tool] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_TOOLS,
        description="Tools the model may call. A reply that calls them ends the job with `stop_reason: tool_use` and "
        "the calls in the view's `tool_calls`; run them and send their results as the next job's last turn.",
    )
    tool_choice: ToolChoice | None = Field(
        default=None,
        description='With `tools`: "auto" (the model decides; the default), "any" (it must call one), "none", or '
        '{"name": TOOL} (it must call that one).',
    )

    @field_validator("thread_id")
    @classmethod
    def _thread_for_one_call(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and checked(info):
            if info.data.get("workflow") is not None:
                raise ValueError("a thread holds conversations; a workflow runs steps of its own")
            if info.data.get("lane") == "batch":
                raise ValueError("a thread's turns run online, in order: drop lane batch, or the thread_id")
        return v

    @field_validator("tools")
    @classmethod
    def _tools_for_one_call(cls, v: list[Tool] | None, info: ValidationInfo) -> list[Tool] | None:
        if v is None or not checked(info):
            return v
        if info.data.get("workflow") is not None:
            raise ValueError("tools are for one call; a workflow's steps have their own prompts")
        if info.data.get("response_format") is not None:
            raise ValueError("a structured reply uses a tool of its own: give tools or response_format, not both")
        if len({t.name for t in v}) != len(v):
            raise ValueError("two tools have the same name")
        return v

    @field_validator("tool_choice")
    @classmethod
    def _choice_of_the_tools(cls, v: ToolChoice | None, info: ValidationInfo) -> ToolChoice | None:
        if v is None or not checked(info):
            return v
        tools = info.data.get("tools")
        if not tools:
            raise ValueError("tool_choice needs `tools`")
        if isinstance(v, NamedChoice) and v.name not in {t.name for t in tools}:
            raise ValueError(f"tool_choice names {v.name!r}, which is not one of the tools")
        return v

    @field_validator("response_format")
    @classmethod
    def _format_for_one_call(cls, v: ResponseFormat | None, info: ValidationInfo) -> ResponseFormat | None:
        if v is not None and checked(info) and info.data.get("workflow") is not None:
            raise ValueError("response_format is for one call; a workflow's steps have their own outputs")
        return v

    @field_validator("system")
    @classmethod
    def _system_for_one_call(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and checked(info) and info.data.get("workflow") is not None:
            raise ValueError("system is for one call; a workflow's steps use their templates' system texts")
        return v

    @field_validator("messages")
    @classmethod
    def _conversation(cls, v: list[Message] | None, info: ValidationInfo) -> list[Message] | None:
        if v is None or not checked(info):
            return v
        if info.data.get("workflow") is not None:
            raise ValueError("messages are one call's conversation; a workflow's steps have their own prompts")
        if v[0].role != "user" or v[-1].role != "user":
            raise ValueError(
                "a conversation starts with a user turn and ends with the user turn to answer "
                f"(it {'starts' if v[0].role != 'user' else 'ends'} with an assistant turn)"
            )
        for i, m in enumerate(v):
            if not m.text().strip() and not m.calls() and not m.results() and not m.images():
                raise ValueError(f"messages[{i}] has no text (and no tool call or result)")
        if problem := pairing_problem(v):
            raise ValueError(problem)
        size = sum(len(m.turn().counted()) for m in v) + len(info.data.get("system") or "")
        if size > MAX_PROMPT_CHARS:
            raise ValueError(
                f"the conversation is {size:,} characters; at most {MAX_PROMPT_CHARS:,} are taken: send fewer turns"
            )
        return v

    @field_validator("prompt")
    @classmethod
    def _prompt_or_workflow(cls, v: str, info: ValidationInfo) -> str:
        if not checked(info):
            return v
        # `workflow` and `messages` are declared first, so they are validated (and in info.data) by now
        workflow, messages = info.data.get("workflow"), info.data.get("messages")
        if messages is not None and v:
            raise ValueError("give either prompt (one turn) or `messages` (a conversation), not both")
        if workflow is None and messages is None and "workflow" in info.data and "messages" in info.data:
            if not v:
                raise ValueError(
                    "prompt is required (or give `messages` for a conversation, or `workflow` and its `inputs`)"
                )
            if not v.strip():
                raise ValueError("prompt must contain non-whitespace text")
        elif workflow is not None and v:
            raise ValueError("give either prompt (one call) or `workflow` (its steps have their own prompts), not both")
        return v

    @field_validator("inputs")
    @classmethod
    def _inputs_bounded(cls, v: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        if not checked(info):
            return v
        if v and info.data.get("workflow") is None:
            raise ValueError("inputs are for workflows; give `workflow` too, or put the text in `prompt`")
        for name, text in v.items():
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$", name):
                raise ValueError(f"input name {name!r} must be a letter or '_' followed by letters, digits or '_'")
            if not text.strip():
                raise ValueError(f"input {name!r} is empty; give its text or a `blob:KEY`")
        if (size := sum(len(t) for t in v.values())) > MAX_INPUT_CHARS:
            raise ValueError(
                f"inputs total {size:,} characters; at most {MAX_INPUT_CHARS:,} are taken inline: upload "
                "the document to the blob store and pass `blob:KEY`"
            )
        return v

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata_shape(cls, v: Any, info: ValidationInfo) -> Any:
        # bounded before anything recurses into it: a deeply nested value would be stored and then
        # fail to serialize or parse everywhere it is read (listings, sweeps, workers)
        if isinstance(v, dict) and checked(info):
            if (depth := json_depth(v)) > MAX_METADATA_DEPTH:
                raise ValueError(f"metadata is nested {depth} levels deep; at most {MAX_METADATA_DEPTH} are allowed")
            if (size := len(json.dumps(v, separators=(",", ":"), default=str))) > MAX_METADATA_BYTES:
                raise ValueError(
                    f"metadata is {size:,} bytes as JSON; at most {MAX_METADATA_BYTES:,} are allowed "
                    "(store large data in a collection or the blob store and reference it)"
                )
        return v

    @field_validator("callback_url")
    @classmethod
    def _callback_scheme(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("callback_url must be an http:// or https:// URL")
        return v

    @property
    def whole(self) -> bool:
        """Whether the reply is taken whole (structured output or tools), never streamed piece by piece."""
        return self.response_format is not None or bool(self.tools)

    def images(self) -> list[Image]:
        """Every image the job sends, its thread's aside."""
        return [i for m in self.messages or () for i in m.images()]

    def ask(self, thread: tuple[Turn, ...] = ()) -> Ask:
        """What the job asks of a model: the prompt, or the conversation's last user turn and the turns before it,
        after its thread's turns (which may be dropped, oldest first, to fit a window)."""
        note = self.response_format.instruction() if self.response_format is not None else ""
        if not self.messages:
            return Ask(self.prompt, thread, self.system, note, droppable=len(thread))
        *earlier, last = self.messages
        history = (*thread, *(m.turn() for m in earlier))
        return Ask(last.text(), history, self.system, note, last.results(), len(thread), last.images())

    def fingerprint(self) -> str:
        """Stable hash of the request, for idempotency-key conflicts and logs (never the raw prompt)."""
        canonical = CANONICAL_JSON.encode(self.model_dump(mode="json"))
        return hashlib.sha256(canonical.encode()).hexdigest()
