"""What makes a provider's 200 a usable reply, whatever the provider.

An empty answer, or usage the model cannot have produced (negative, more output than was allowed,
more input than its window), is `malformed` (retryable, like a truncated body), never a success at a
nonsense price. A reply cut at `max_tokens` is served, failed or sent to a fallback as its route's
`on_max_tokens` says.
"""

from __future__ import annotations

from core.config.worker import ModelConfig, RouteConfig
from core.errors import ProviderError
from core.models import ProviderResult

WINDOW_SLACK = 1.1  # providers count with their own tokenizer: allow for it before calling usage absurd


def check_reply(result: ProviderResult, *, max_tokens: int, model: ModelConfig, route: RouteConfig) -> None:
    """Raise ProviderError for a reply that must not be served as it is."""
    if not result.text.strip():
        raise ProviderError(f"the reply has no text (stop_reason {result.raw_stop_reason or 'none'})", malformed=True)
    if not usage_is_sane(result, max_tokens=max_tokens, model=model):
        raise ProviderError(
            f"the reply reports impossible usage ({result.input_tokens} input, {result.cache_read_tokens} cache-read, "
            f"{result.output_tokens} output tokens for a {model.context_window}-token window and {max_tokens} "
            "max_tokens); not served, not billed at that price",
            malformed=True,
        )
    if result.stop_reason == "max_tokens" and route.on_max_tokens != "accept":
        raise ProviderError(
            f"the reply was cut at max_tokens ({max_tokens}) and the route sets on_max_tokens: "
            f"{route.on_max_tokens}; raise the route's max_tokens or shorten the request",
            truncated=True,
        )


def usage_is_sane(result: ProviderResult, *, max_tokens: int, model: ModelConfig) -> bool:
    counts = (result.input_tokens, result.output_tokens, result.cache_read_tokens, result.cache_write_tokens)
    if min(counts) < 0:
        return False
    return (
        result.output_tokens <= max_tokens
        and result.input_tokens + result.cache_read_tokens + result.cache_write_tokens
        <= model.context_window * WINDOW_SLACK
    )
