"""Anthropic provider on the official SDK: one async client per process, SDK retries off.

Governance owns retries (the SDK would honour any `retry-after` uncapped), so `max_retries=0`, and
every SDK failure becomes a `ProviderError` with the wire status, headers and body.
"""

from __future__ import annotations

from typing import Any

from core.models import ProviderResult
from core.providers.base import ChatRequest, ProviderError, looks_like_context_overflow

STOP_REASONS = {
    "end_turn": "end_turn",
    "stop_sequence": "end_turn",
    "max_tokens": "max_tokens",
    "refusal": "refusal",
    "tool_use": "tool_use",
    "pause_turn": "other",
}


class AnthropicProvider:
    name = "anthropic"

    def __init__(self, *, api_key: str, base_url: str | None = None, timeout_s: float = 60.0, max_connections: int = 200) -> None:
        import anthropic  # imported here: the submit path and offline jobs never pay for it

        self._anthropic = anthropic
        kwargs: dict[str, Any] = {"api_key": api_key, "max_retries": 0, "timeout": timeout_s}
        if base_url:
            kwargs["base_url"] = base_url
        self.client = anthropic.AsyncAnthropic(**kwargs)

    async def generate(self, request: ChatRequest, *, timeout_s: float) -> ProviderResult:
        a = self._anthropic
        kwargs: dict[str, Any] = {
            "model": request.model_id,
            "max_tokens": request.max_tokens,
            "system": request.system,
            "messages": [{"role": "user", "content": request.user}],
            "timeout": timeout_s,
        }
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        try:
            msg = await self.client.messages.create(**kwargs)
        except a.APITimeoutError as e:
            raise ProviderError(f"anthropic: request timed out: {e}", transport="timeout") from None
        except a.APIConnectionError as e:
            raise ProviderError(f"anthropic: connection failed: {e}", transport="connection") from None
        except a.APIResponseValidationError as e:
            raise ProviderError(f"anthropic: malformed reply: {e}", malformed=True, body=_body(e)) from None
        except a.APIStatusError as e:
            body = _body(e)
            raise ProviderError(
                f"anthropic: HTTP {e.status_code}: {getattr(e, 'message', e)}",
                status_code=e.status_code,
                headers=dict(e.response.headers),
                body=body,
                context_overflow=looks_like_context_overflow(e.status_code, body),
            ) from None
        except ValueError as e:  # a 2xx whose body isn't JSON
            raise ProviderError(f"anthropic: malformed reply: {e}", malformed=True) from None
        try:
            text = "".join(getattr(b, "text", "") for b in msg.content if getattr(b, "type", None) == "text")
            usage = msg.usage
            raw_stop = msg.stop_reason
            result = ProviderResult(
                text=text,
                cache_read_tokens=int(getattr(usage, "cache_read_input_tokens", None) or 0),
                input_tokens=int(usage.input_tokens),
                output_tokens=int(usage.output_tokens),
                stop_reason=STOP_REASONS.get(raw_stop or "", "other"),
                raw_stop_reason=raw_stop,
            )
        except (AttributeError, TypeError, ValueError) as e:
            raise ProviderError(f"anthropic: malformed reply: {e}", malformed=True, body=repr(msg)[:2000]) from None
        if result.stop_reason == "refusal":
            raise ProviderError("anthropic: the model refused on content policy grounds", content_policy=True, status_code=200)
        return result

    async def count_tokens(self, model_id: str, system: str, user: str) -> int:
        """The model's own input-token count (Anthropic's free count-tokens endpoint)."""
        r = await self.client.messages.count_tokens(
            model=model_id, system=system, messages=[{"role": "user", "content": user}],
        )
        return int(r.input_tokens)

    async def aclose(self) -> None:
        await self.client.close()


def _body(e: Exception) -> str | None:
    resp = getattr(e, "response", None)
    try:
        return resp.text[:4000] if resp is not None else None
    except Exception:
        return None
