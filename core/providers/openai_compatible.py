"""Chat Completions over HTTP: OpenAI, Azure OpenAI, vLLM, Ollama, LiteLLM and other servers
speaking that API.

The client is `httpx2` (what the Anthropic SDK itself now uses): httpx 0.28, which the `openai`
SDK depends on, slows sharply at ~100 concurrent async requests, exactly the load a worker runs.
One client per process; no retries here (governance owns them).
"""

from __future__ import annotations

import json
from typing import Any

from core.models import ProviderResult
from core.providers.base import ChatRequest, ProviderError, looks_like_context_overflow

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "content_filter": "refusal", "tool_calls": "tool_use"}


class OpenAICompatibleProvider:
    name = "openai_compatible"

    def __init__(
        self, *, base_url: str, api_key: str | None, timeout_s: float = 60.0, max_connections: int = 200,
        api_style: str = "openai", api_version: str | None = None,
    ) -> None:
        import httpx2

        self._httpx = httpx2
        self.api_style = api_style
        self.api_version = api_version
        headers = {"content-type": "application/json"}
        if api_key:
            headers.update({"api-key": api_key} if api_style == "azure" else {"authorization": f"Bearer {api_key}"})
        self.client = httpx2.AsyncClient(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s,
            limits=httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    def _url(self, model_id: str) -> tuple[str, dict[str, str]]:
        if self.api_style == "azure":  # model_id is the deployment name
            return f"/openai/deployments/{model_id}/chat/completions", {"api-version": self.api_version or "2024-10-21"}
        return "/chat/completions", {}

    async def generate(self, request: ChatRequest, *, timeout_s: float) -> ProviderResult:
        h = self._httpx
        body: dict[str, Any] = {
            "messages": [{"role": "system", "content": request.system}, {"role": "user", "content": request.user}],
            "max_tokens": request.max_tokens,
        }
        if self.api_style != "azure":
            body["model"] = request.model_id
        if request.temperature is not None:
            body["temperature"] = request.temperature
        url, params = self._url(request.model_id)
        try:
            resp = await self.client.post(url, params=params, json=body, timeout=timeout_s)
        except h.TimeoutException as e:
            raise ProviderError(f"openai_compatible: request timed out: {e!r}", transport="timeout") from None
        except h.TransportError as e:
            raise ProviderError(f"openai_compatible: connection failed: {e!r}", transport="connection") from None
        text = resp.text
        if resp.status_code >= 400:
            raise ProviderError(
                f"openai_compatible: HTTP {resp.status_code}: {text[:300]}", status_code=resp.status_code,
                headers=dict(resp.headers), body=text[:4000],
                context_overflow=looks_like_context_overflow(resp.status_code, text),
                content_policy=resp.status_code == 400 and "content_filter" in text,
            )
        try:
            data = json.loads(text)
            choice = data["choices"][0]
            content = choice["message"].get("content") or ""
            usage = data.get("usage") or {}
            cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
            raw_stop = choice.get("finish_reason")
            result = ProviderResult(
                text=content,
                input_tokens=int(usage.get("prompt_tokens", 0)) - cached,  # prompt_tokens includes cache reads
                output_tokens=int(usage.get("completion_tokens", 0)),
                cache_read_tokens=cached,
                stop_reason=STOP_REASONS.get(raw_stop or "", "other"),
                raw_stop_reason=raw_stop,
            )
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            raise ProviderError(f"openai_compatible: malformed reply: {e!r}", malformed=True, body=text[:4000]) from None
        if result.stop_reason == "refusal":
            raise ProviderError("openai_compatible: the reply was stopped by the content filter",
                                content_policy=True, status_code=200)
        return result

    async def aclose(self) -> None:
        await self.client.aclose()
