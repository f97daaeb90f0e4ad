"""The provider port and the one error type every provider raises.

Providers translate their SDK's failures into `ProviderError` carrying the HTTP status, headers and
body (or a transport kind), so governance classifies by what happened on the wire, never by SDK
exception class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol, runtime_checkable

from core.models import ProviderResult


@dataclass(frozen=True)
class ContextChunk:
    id: str  # stable citation id, `doc#chunk`
    source: str
    title: str | None
    text: str
    score: float = 0.0
    section: str | None = None


@dataclass
class ChatRequest:
    model_id: str
    system: str
    user: str  # the rendered user turn (instructions, fenced context, question)
    question: str
    max_tokens: int = 1024
    context: list[ContextChunk] = field(default_factory=list)
    temperature: float | None = None


class ProviderError(Exception):
    """A failed provider call, described by what was observed on the wire."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        headers: Mapping[str, str] | None = None,
        body: str | None = None,
        transport: str | None = None,  # "timeout" | "connection" | None
        malformed: bool = False,
        content_policy: bool = False,
        context_overflow: bool = False,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.headers = {k.lower(): v for k, v in (headers or {}).items()}
        self.body = body
        self.transport = transport
        self.malformed = malformed
        self.content_policy = content_policy
        self.context_overflow = context_overflow  # the input didn't fit the model's window


CONTEXT_OVERFLOW_HINTS = (
    "prompt is too long", "context_length_exceeded", "maximum context length", "input is too long",
    "too many tokens", "exceeds the context window",
)


def looks_like_context_overflow(status: int | None, body: str | None) -> bool:
    """Providers report an over-long input as a plain 400; its wording is the only signal."""
    return status in (400, 413) and bool(body) and any(h in body.lower() for h in CONTEXT_OVERFLOW_HINTS)


@runtime_checkable
class Provider(Protocol):
    name: str

    async def generate(self, request: ChatRequest, *, timeout_s: float) -> ProviderResult: ...

    async def aclose(self) -> None: ...
