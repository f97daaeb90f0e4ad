"""The provider port: `ChatRequest` in, `ProviderResult` out, failures as `core.errors.ProviderError`.

Providers translate their SDK's failures into `ProviderError` carrying the HTTP status, headers and
body (or a transport kind), so governance classifies by what happened on the wire, never by SDK
exception class. Counting tokens is an optional capability (`TokenCounter`), checked with isinstance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from core.chunks import ContextChunk
from core.conversation import Turn
from core.errors import ProviderError
from core.images import Image
from core.models import ProviderResult
from core.structured import ResponseFormat
from core.tooling import NamedChoice, Tool, ToolChoice, ToolResult

__all__ = [
    "Batcher",
    "ChatRequest",
    "ContextChunk",
    "Provider",
    "ProviderError",
    "Streamer",
    "TokenCounter",
    "looks_like_context_overflow",
]


@dataclass
class ChatRequest:
    model_id: str
    system: str
    user: str  # the rendered user turn (instructions, fenced context, question)
    question: str
    max_tokens: int = 1024
    context: list[ContextChunk] = field(default_factory=list)
    temperature: float | None = None
    cache_prefix_chars: int = 0  # mark system + user[:this] for the provider's prompt cache (0: don't)
    history: tuple[Turn, ...] = ()  # a conversation's earlier turns, oldest first, sent before `user`
    cache_history: bool = False  # mark the end of `history` for the prompt cache: the next turn's prefix
    response_format: ResponseFormat | None = None  # a JSON reply, in the provider's native mode where it has one
    results: tuple[ToolResult, ...] = ()  # the user turn's tool results, before `user`
    images: tuple[Image, ...] = ()  # the user turn's images (loaded), before `user`
    tools: tuple[Tool, ...] = ()  # tools the model may call; its calls end the reply (`ProviderResult.tool_calls`)
    tool_choice: ToolChoice | None = None
    api: str = "chat"  # "moderations": the provider's moderation endpoint classifies `question` (openai_compatible)

    @property
    def whole(self) -> bool:
        """Whether the reply must come whole (structured output, tool calls): never streamed piece by piece."""
        return self.response_format is not None or bool(self.tools)


def offered(request: ChatRequest) -> tuple[tuple[Tool, ...], ToolChoice | None]:
    """The tools a request offers and the choice given: the job's own, or structured output's single tool the model
    must call, whose parameters are the response schema (the native JSON mode of the APIs without one of their own)."""
    fmt = request.response_format
    if fmt is None:
        return request.tools, request.tool_choice
    tool = Tool(name=fmt.name, description="Give the reply as this tool's input.", parameters=fmt.schema_or_object())
    return (tool,), NamedChoice(name=fmt.name)


CONTEXT_OVERFLOW_HINTS = (
    "prompt is too long",
    "context_length_exceeded",
    "maximum context length",
    "input is too long",
    "too many tokens",
    "exceeds the context window",
)


def looks_like_context_overflow(status: int | None, body: str | None) -> bool:
    """Providers report an over-long input as a plain 400; its wording is the only signal."""
    return status in (400, 413) and body is not None and any(h in body.lower() for h in CONTEXT_OVERFLOW_HINTS)


@runtime_checkable
class Provider(Protocol):
    name: str

    async def generate(self, request: ChatRequest, *, timeout_s: float) -> ProviderResult: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class TokenCounter(Protocol):
    """A provider that can count a prompt's input tokens exactly as its model will (Anthropic's count endpoint)."""

    async def count_tokens(self, model_id: str, system: str, user: str, history: tuple[Turn, ...] = ()) -> int: ...


@runtime_checkable
class Streamer(Protocol):
    """A provider that can stream its reply: `on_delta` gets each piece of text as it arrives, and the
    result is the whole reply with the stream's own usage. A stream that ends without its terminal event,
    or carries an error event, raises a transient `ProviderError` whose `partial` holds the usage so far."""

    async def stream(
        self, request: ChatRequest, *, timeout_s: float, on_delta: Callable[[str], None]
    ) -> ProviderResult: ...


@runtime_checkable
class Batcher(Protocol):
    """A provider with a batch API (Anthropic Message Batches): many calls sent at once at a discount,
    answered within the provider's window. `batch_results` is None while the batch still runs; then each
    request's reply, or the error that sends it back to the online lane."""

    async def submit_batch(self, items: list[tuple[str, ChatRequest]]) -> str: ...

    async def batch_results(self, batch_id: str) -> dict[str, ProviderResult | ProviderError] | None: ...
