"""The model catalog's entries: what a model costs, how much it holds, what it accepts and how fast it may be called.

Apart from `core.config.worker`, whose `Settings` holds them under `models`, so that module stays one screen of
sections.
"""

# no `from __future__ import annotations`: pydantic then needs no string evaluation per field (cold start)

from typing import Literal

from pydantic import Field

from core.config.api import _Strict


class LimitsConfig(_Strict):
    """Provider limits for one model deployment, enforced by token buckets shared by every worker.

    Match them to the provider's published limits (Anthropic: requests, input and output tokens per
    minute; OpenAI: requests and tokens per minute) so workers slow down before the provider says 429.
    """

    requests_per_minute: float | None = Field(default=None, gt=0)
    input_tokens_per_minute: float | None = Field(default=None, gt=0)
    output_tokens_per_minute: float | None = Field(default=None, gt=0)
    tokens_per_minute: float | None = Field(default=None, gt=0, description="Input plus output tokens.")
    burst_s: float = Field(
        default=60.0, gt=0, description="Bucket capacity in seconds of refill (60 = a full minute, as Anthropic's)."
    )
    max_concurrency: int | None = Field(default=None, ge=1, description="Calls in flight across all workers.")

    def rates_per_s(self) -> dict[str, float]:
        named = {
            "requests": self.requests_per_minute,
            "input_tokens": self.input_tokens_per_minute,
            "output_tokens": self.output_tokens_per_minute,
            "tokens": self.tokens_per_minute,
        }
        return {k: v / 60.0 for k, v in named.items() if v is not None}


class ModelConfig(_Strict):
    provider: str = Field(description="Name of an entry under `providers`.")
    model_id: str = Field(description="The provider's model identifier.")
    context_window: int = Field(default=200_000, gt=0)
    max_output_tokens: int = Field(default=8192, gt=0)
    input_per_mtok: float = Field(default=0.0, ge=0, description="USD per million input tokens.")
    output_per_mtok: float = Field(default=0.0, ge=0, description="USD per million output tokens.")
    cache_read_per_mtok: float | None = Field(
        default=None, ge=0, description="USD per million prompt-cache-read tokens, where the provider has them."
    )
    cache_write_per_mtok: float | None = Field(
        default=None,
        ge=0,
        description="USD per million tokens written to the prompt cache (Anthropic: 1.25x input "
        "for the 5-minute cache); unset: the input price.",
    )
    batch_discount: float = Field(
        default=0.5, ge=0, lt=1, description="Off the price through the batch API (Anthropic and OpenAI: 50%)."
    )
    cache_min_tokens: int | None = Field(
        default=None,
        gt=0,
        description="Mark the stable prompt prefix (system, instructions, context) for the "
        "provider's prompt cache once it is this long (Anthropic's minimum for the "
        "model); unset: never mark it.",
    )
    region: str | None = Field(default=None, description="Where the model is served (for tenant policies).")
    vision: bool = Field(
        default=False,
        description="The model reads images (Claude 3 and later, GPT-4o, Nova Pro, ...): a job with images is routed "
        "only to models that do, fallbacks included.",
    )
    api: Literal["chat", "moderations"] = Field(
        default="chat",
        description="`moderations`: the provider's moderation endpoint (an openai_compatible provider's /moderations, "
        "such as OpenAI's omni-moderation-latest), for a safety policy's `moderation.model`: the text is classified, "
        "not answered, and its categories come back as the classification's reply.",
    )
    limits: LimitsConfig | None = Field(default=None, description="Rate limits and concurrency cap.")
    tokenizer: Literal["cl100k_base", "estimate"] = Field(
        default="cl100k_base", description="How prompts are counted for budgets (a real BPE shipped offline)."
    )
    token_margin: float = Field(
        default=0.0,
        ge=0.0,
        le=0.5,
        description="Share of the input space held back because `tokenizer` only approximates the model's own "
        "(Claude's tokenizer is not public: its counts run up to ~25% above cl100k_base).",
    )
    count_tokens: Literal["local", "provider"] = Field(
        default="local", description="`provider`: check the assembled prompt with the provider's count-tokens endpoint."
    )

    def cost(
        self, input_tokens: int, output_tokens: int, cache_read_tokens: int = 0, cache_write_tokens: int = 0
    ) -> float:
        """USD for one call; `input_tokens` excludes cache reads and writes, each billed at its own price."""
        read = self.cache_read_per_mtok if self.cache_read_per_mtok is not None else self.input_per_mtok
        write = self.cache_write_per_mtok if self.cache_write_per_mtok is not None else self.input_per_mtok
        micro = (
            input_tokens * self.input_per_mtok
            + cache_read_tokens * read
            + cache_write_tokens * write
            + output_tokens * self.output_per_mtok
        )
        return round(micro / 1_000_000, 10)
