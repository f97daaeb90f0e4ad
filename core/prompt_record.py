"""The record of how a job's prompt was built (template, token counts per part, the chunks used and the ones
left out): kept on the job, shown in its view, enough to explain, audit and replay the prompt."""

# no `from __future__ import annotations`: pydantic then needs no string evaluation per field (cold start)

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(defer_build=True)


class ChunkUse(_Model):
    id: str
    tokens: int
    score: float = 0.0


class ChunkDropped(_Model):
    id: str
    reason: str = Field(description="near-duplicate of X, per-source cap, over budget, beyond top_k.")


class PromptAssembly(_Model):
    """How the prompt was built: enough to explain it, audit it and replay it.

    budget = window - system - history - template - question - reserved_output - margin; the context never
    exceeds it, and `input_tokens` is the exact count of the prompt as sent (system, earlier turns, user turn).
    """

    template: str
    model: str
    tokenizer: str
    window: int
    system_tokens: int
    template_tokens: int
    question_tokens: int
    history_tokens: int = Field(default=0, description="A conversation's earlier turns, as sent.")
    history_turns: int = 0
    history_dropped: int = Field(default=0, description="A thread's oldest turns left out to fit the window.")
    reserved_output_tokens: int
    margin_tokens: int
    context_budget: int
    context_tokens: int
    input_tokens: int
    provider_input_tokens: int | None = Field(default=None, description="The provider's own count, when asked.")
    ordering: str = "relevance"
    chunks: list[ChunkUse] = Field(default_factory=list)
    dropped: list[ChunkDropped] = Field(default_factory=list)
