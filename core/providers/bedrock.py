"""Amazon Bedrock through the Converse API (boto3), one client per process, botocore retries off.

boto3 is synchronous, so calls run in a thread; the client is thread-safe and its connection pool
is sized to the provider's `max_connections`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from core.conversation import Turn, turns
from core.images import MEDIA_TYPES
from core.models import ProviderResult
from core.providers.base import ChatRequest, ProviderError, looks_like_context_overflow, offered
from core.tooling import NamedChoice, Tool, ToolCall, ToolChoice

STREAM_ERRORS = {
    "throttlingException": 429,
    "serviceUnavailableException": 503,
    "modelStreamErrorException": 500,
    "internalServerException": 500,
    "validationException": 400,
}
STOP_REASONS = {
    "end_turn": "end_turn",
    "stop_sequence": "end_turn",
    "max_tokens": "max_tokens",
    "guardrail_intervened": "refusal",
    "content_filtered": "refusal",
    "tool_use": "tool_use",
}


class BedrockProvider:
    name = "bedrock"

    def __init__(self, *, region: str | None, endpoint_url: str | None, timeout_s: float, max_connections: int) -> None:
        import boto3
        from botocore.config import Config

        self._botocore_exceptions = __import__("botocore.exceptions", fromlist=["x"])
        self.client = boto3.client(
            "bedrock-runtime",
            region_name=region,
            endpoint_url=endpoint_url,
            config=Config(
                retries={"total_max_attempts": 1},
                read_timeout=timeout_s,
                connect_timeout=min(10.0, timeout_s),
                max_pool_connections=max_connections,
            ),
        )

    def _kwargs(self, request: ChatRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "modelId": request.model_id,
            "system": [{"text": request.system}],
            "messages": [
                {"role": t.role, "content": _content(t)}
                for t in turns(request.history, request.user, request.results, request.images)
            ],
            "inferenceConfig": {"maxTokens": request.max_tokens},
        }
        if config := _tool_config(*offered(request)):
            kwargs["toolConfig"] = config
        if request.temperature is not None:
            kwargs["inferenceConfig"]["temperature"] = request.temperature
        return kwargs

    async def generate(self, request: ChatRequest, *, timeout_s: float) -> ProviderResult:
        try:
            resp = await asyncio.wait_for(
                asyncio.to_thread(self.client.converse, **self._kwargs(request)), timeout=timeout_s
            )
        except Exception as e:
            raise self._error(e) from None
        try:
            blocks = resp["output"]["message"]["content"]
            calls = [
                ToolCall(id=u["toolUseId"], name=u["name"], arguments=dict(u.get("input") or {}))
                for u in (b["toolUse"] for b in blocks if "toolUse" in b)
            ]
            result = _result("".join(b.get("text", "") for b in blocks), resp.get("usage", {}), resp.get("stopReason"))
            result.tool_calls = calls
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise ProviderError(f"bedrock: malformed reply: {e!r}", malformed=True, body=repr(resp)[:2000]) from None
        return _refused(result)

    async def stream(
        self, request: ChatRequest, *, timeout_s: float, on_delta: Callable[[str], None]
    ) -> ProviderResult:
        """ConverseStream, read in a thread; each text delta handed to the event loop as it arrives. Done
        only at `messageStop` (usage comes in the `metadata` event after it)."""
        loop = asyncio.get_running_loop()
        text: list[str] = []
        seen: dict[str, Any] = {"usage": {}, "stop": None, "stopped": False}

        def read() -> None:
            for event in self.client.converse_stream(**self._kwargs(request))["stream"]:
                if piece := (event.get("contentBlockDelta") or {}).get("delta", {}).get("text"):
                    text.append(piece)
                    loop.call_soon_threadsafe(on_delta, piece)  # runs before this thread's result is seen
                elif "messageStop" in event:
                    seen["stop"], seen["stopped"] = event["messageStop"].get("stopReason"), True
                elif "metadata" in event:
                    seen["usage"] = event["metadata"].get("usage") or {}

        def partial() -> ProviderResult:
            return _result("".join(text), seen["usage"] or {"outputTokens": len(text)}, seen["stop"])

        try:
            await asyncio.wait_for(asyncio.to_thread(read), timeout=timeout_s)
        except Exception as e:
            err = self._error(e)
            err.partial = partial() if text else None
            raise err from None
        if not seen["stopped"]:
            raise ProviderError(
                f"bedrock: the stream ended before messageStop ({len(''.join(text))} characters in)",
                transport="connection",
                partial=partial(),
            )
        return _refused(partial())

    def _error(self, e: Exception) -> ProviderError:
        exc = self._botocore_exceptions
        if isinstance(e, (asyncio.TimeoutError, exc.ReadTimeoutError, exc.ConnectTimeoutError)):
            return ProviderError(f"bedrock: request timed out: {e!r}", transport="timeout")
        if isinstance(e, exc.EventStreamError):  # an exception event mid-stream (throttling, unavailable)
            code = e.response.get("Error", {}).get("Code", "")
            status = STREAM_ERRORS.get(code[:1].lower() + code[1:], 500)
            return ProviderError(
                f"bedrock: {code} mid-stream: {e.response.get('Error', {}).get('Message')}",
                status_code=status,
                body=code,
            )
        if isinstance(e, exc.ClientError):
            meta = e.response.get("ResponseMetadata", {})
            status = meta.get("HTTPStatusCode")
            err = e.response.get("Error", {})
            body = f"{err.get('Code')}: {err.get('Message')}"
            return ProviderError(
                f"bedrock: HTTP {status}: {body}",
                status_code=status,
                headers=meta.get("HTTPHeaders", {}),
                body=body,
                context_overflow=looks_like_context_overflow(status, body),
            )
        if isinstance(e, (exc.EndpointConnectionError, exc.ConnectionClosedError, ConnectionError)):
            return ProviderError(f"bedrock: connection failed: {e!r}", transport="connection")
        if isinstance(e, (exc.ResponseParserError, ValueError)):
            return ProviderError(f"bedrock: malformed reply: {e!r}", malformed=True)
        return ProviderError(f"bedrock: {type(e).__name__}: {e}", transport="connection")

    async def aclose(self) -> None:
        self.client.close()


def _result(text: str, usage: dict[str, Any], raw_stop: str | None) -> ProviderResult:
    return ProviderResult(
        text=text,
        input_tokens=int(usage.get("inputTokens", 0)),
        output_tokens=int(usage.get("outputTokens", 0)),
        cache_read_tokens=int(usage.get("cacheReadInputTokens", 0) or 0),
        cache_write_tokens=int(usage.get("cacheWriteInputTokens", 0) or 0),
        stop_reason=STOP_REASONS.get(raw_stop or "", "other"),
        raw_stop_reason=raw_stop,
    )


def _content(t: Turn) -> list[dict[str, Any]]:
    """A turn's Converse content blocks: tool results first, then text (never an empty text block, which Converse
    refuses), then tool calls."""
    results = [
        {
            "toolResult": {
                "toolUseId": r.tool_call_id,
                "content": [{"text": r.content}],
                "status": "error" if r.is_error else "success",
            }
        }
        for r in t.results
    ]
    calls = [{"toolUse": {"toolUseId": c.id, "name": c.name, "input": c.arguments}} for c in t.calls]
    images = [{"image": {"format": MEDIA_TYPES[i.media_type], "source": {"bytes": i.data}}} for i in t.images]
    return [*results, *images, *([{"text": t.text}] if t.text else []), *calls]


def _tool_config(offered: tuple[Tool, ...], choice: ToolChoice | None) -> dict[str, Any] | None:
    """Converse's toolConfig. It has no "none": the tools are still described (a conversation with tool blocks
    must have them), and the model is left to choose."""
    if not offered:
        return None
    specs = [
        {"toolSpec": {"name": t.name, "description": t.description or t.name, "inputSchema": {"json": t.parameters}}}
        for t in offered
    ]
    if isinstance(choice, NamedChoice):
        return {"tools": specs, "toolChoice": {"tool": {"name": choice.name}}}
    return {"tools": specs, "toolChoice": {"any": {}}} if choice == "any" else {"tools": specs}


def _refused(result: ProviderResult) -> ProviderResult:
    if result.stop_reason == "refusal":
        raise ProviderError(
            "bedrock: the reply was stopped by a guardrail or content filter", content_policy=True, status_code=200
        )
    return result
