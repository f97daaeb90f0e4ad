"""What makes a provider's 200 a usable reply, whatever the provider.

An empty answer, or usage the model cannot have produced (negative, more output than was allowed,
more input than its window), is `malformed` (retryable, like a truncated body), never a success at a
nonsense price. A reply cut at `max_tokens` is served, failed or sent to a fallback as its route's
`on_max_tokens` says. A reply that does not match the job's response format gets one corrective call, then fails.
"""

from __future__ import annotations

import json

from core.config.worker import ModelConfig, RouteConfig
from core.errors import ProviderError
from core.models import Attempt, Job, ProviderResult
from core.structured import ResponseFormat, problems

WINDOW_SLACK = 1.1  # providers count with their own tokenizer: allow for it before calling usage absurd


def check_reply(result: ProviderResult, *, max_tokens: int, model: ModelConfig, route: RouteConfig) -> None:
    """Raise ProviderError for a reply that must not be served as it is."""
    if not result.text.strip() and not result.tool_calls:
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


class FormatMismatch(ProviderError):
    """A reply that is not in the job's response format: `malformed`, retried once as a corrective call, then
    `final` (the job fails naming the violations, never succeeds)."""

    def __init__(self, found: list[str], *, final: bool) -> None:
        head = "after a corrective call, the reply still" if final else "the reply"
        super().__init__(f"{head} does not match the response format: " + "; ".join(found[:3]), malformed=True)
        self.final = final


def format_mismatch(job: Job, result: ProviderResult) -> FormatMismatch | None:
    """Why this reply can't be the job's result under its `response_format` (None: it can, or there is none)."""
    fmt = job.request.response_format
    if fmt is None or not (found := problems(fmt, result.text)):
        return None
    return FormatMismatch(found, final=last_rejected(job) is not None)


def last_rejected(job: Job) -> Attempt | None:
    """The latest earlier attempt whose reply was refused for its format: the one a corrective call quotes."""
    return next((a for a in reversed(job.attempts[:-1]) if a.rejected_reply is not None), None)


def unwrapped(fmt: ResponseFormat | None, result: ProviderResult) -> ProviderResult:
    """A reply through structured output's forced tool, as the JSON it carries: the call is how the answer came,
    so the turn ended (a reply with text of its own, from a JSON mode, is left as it is)."""
    if fmt is None or result.text.strip() or not result.tool_calls:
        return result
    call = next((c for c in result.tool_calls if c.name == fmt.name), result.tool_calls[0])
    stop = "end_turn" if result.stop_reason == "tool_use" else result.stop_reason
    text = json.dumps(call.arguments, separators=(",", ":"))
    return result.model_copy(update={"text": text, "tool_calls": [], "stop_reason": stop})
