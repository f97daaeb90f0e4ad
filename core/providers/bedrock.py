"""Amazon Bedrock through the Converse API (boto3), one client per process, botocore retries off.

boto3 is synchronous, so calls run in a thread; the client is thread-safe and its connection pool
is sized to the provider's `max_connections`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from core.models import ProviderResult
from core.providers.base import ChatRequest, ProviderError, looks_like_context_overflow

STOP_REASONS = {
    "end_turn": "end_turn", "stop_sequence": "end_turn", "max_tokens": "max_tokens",
    "guardrail_intervened": "refusal", "content_filtered": "refusal", "tool_use": "tool_use",
}


class BedrockProvider:
    name = "bedrock"

    def __init__(self, *, region: str | None, endpoint_url: str | None, timeout_s: float, max_connections: int) -> None:
        import boto3
        from botocore.config import Config

        self._botocore_exceptions = __import__("botocore.exceptions", fromlist=["x"])
        self.client = boto3.client(
            "bedrock-runtime", region_name=region, endpoint_url=endpoint_url,
            config=Config(
                retries={"total_max_attempts": 1}, read_timeout=timeout_s, connect_timeout=min(10.0, timeout_s),
                max_pool_connections=max_connections,
            ),
        )

    def _converse(self, request: ChatRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "modelId": request.model_id,
            "system": [{"text": request.system}],
            "messages": [{"role": "user", "content": [{"text": request.user}]}],
            "inferenceConfig": {"maxTokens": request.max_tokens},
        }
        if request.temperature is not None:
            kwargs["inferenceConfig"]["temperature"] = request.temperature
        return self.client.converse(**kwargs)

    async def generate(self, request: ChatRequest, *, timeout_s: float) -> ProviderResult:
        exc = self._botocore_exceptions
        try:
            resp = await asyncio.wait_for(asyncio.to_thread(self._converse, request), timeout=timeout_s)
        except (asyncio.TimeoutError, exc.ReadTimeoutError, exc.ConnectTimeoutError) as e:
            raise ProviderError(f"bedrock: request timed out: {e!r}", transport="timeout") from None
        except exc.ClientError as e:
            meta = e.response.get("ResponseMetadata", {})
            status = meta.get("HTTPStatusCode")
            err = e.response.get("Error", {})
            body = f"{err.get('Code')}: {err.get('Message')}"
            raise ProviderError(
                f"bedrock: HTTP {status}: {body}", status_code=status, headers=meta.get("HTTPHeaders", {}),
                body=body, context_overflow=looks_like_context_overflow(status, body),
            ) from None
        except (exc.EndpointConnectionError, exc.ConnectionClosedError, ConnectionError) as e:
            raise ProviderError(f"bedrock: connection failed: {e!r}", transport="connection") from None
        except (exc.ResponseParserError, ValueError) as e:
            raise ProviderError(f"bedrock: malformed reply: {e!r}", malformed=True) from None
        try:
            blocks = resp["output"]["message"]["content"]
            text = "".join(b.get("text", "") for b in blocks)
            usage = resp.get("usage", {})
            raw_stop = resp.get("stopReason")
            result = ProviderResult(
                text=text,
                input_tokens=int(usage.get("inputTokens", 0)),
                output_tokens=int(usage.get("outputTokens", 0)),
                cache_read_tokens=int(usage.get("cacheReadInputTokens", 0) or 0),
                stop_reason=STOP_REASONS.get(raw_stop or "", "other"),
                raw_stop_reason=raw_stop,
            )
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise ProviderError(f"bedrock: malformed reply: {e!r}", malformed=True, body=repr(resp)[:2000]) from None
        if result.stop_reason == "refusal":
            raise ProviderError("bedrock: the reply was stopped by a guardrail or content filter",
                                content_policy=True, status_code=200)
        return result

    async def aclose(self) -> None:
        self.client.close()
