"""Anthropic provider on the official SDK: one async client per process, SDK retries off.

Governance owns retries (the SDK would honour any `retry-after` uncapped), so `max_retries=0`, and
every SDK failure becomes a `ProviderError` with the wire status, headers and body.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from core.conversation import Turn
from core.models import ProviderResult
from core.providers.anthropic_direct import DirectMessages, http_error
from core.providers.anthropic_wire import messages, reply_content, tools
from core.providers.base import ChatRequest, ProviderError, offered
from core.tooling import ToolCall

STOP_REASONS = {
    "end_turn": "end_turn",
    "stop_sequence": "end_turn",
    "max_tokens": "max_tokens",
    "refusal": "refusal",
    "tool_use": "tool_use",
    "pause_turn": "other",
}


def http_transport(wanted: str = "auto") -> str:
    """`aiohttp` when asked for or (auto) when the SDK's aiohttp extra is importable, else `httpx`."""
    if wanted == "httpx":
        return "httpx"
    try:
        import aiohttp  # noqa: F401
        from anthropic._vendor import httpx_aiohttp  # noqa: F401  the SDK's own aiohttp transport
    except ImportError:
        if wanted == "aiohttp":
            from core.errors import ConfigError

            raise ConfigError(
                "providers.*.http is aiohttp, but aiohttp is not installed: "
                "pip install 'altostratus[aiohttp]', or set http: auto"
            ) from None
        return "httpx"
    return "aiohttp"


def _tracer_configured() -> bool:
    """Whether someone set the process's tracer provider (a distro, `opentelemetry-instrument`, the app)
    before the client was built, so the SDK's own call spans would be recorded."""
    try:
        from opentelemetry import trace
    except ImportError:
        return False
    return type(trace.get_tracer_provider()).__name__ not in ("ProxyTracerProvider", "NoOpTracerProvider")


def _http_client(transport: str, timeout_s: float, max_connections: int) -> Any:
    """The SDK's client on `transport`, its pool sized to the configured concurrency: the SDK's default keeps
    only 100 connections alive, so more calls in flight than that open and close a connection each."""
    import anthropic
    import httpx2  # the SDK's own HTTP client library; aiohttp's transport takes its Limits too

    limits = httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    if transport == "aiohttp":
        return anthropic.DefaultAioHttpClient(timeout=timeout_s, limits=limits)
    return anthropic.DefaultAsyncHttpxClient(timeout=timeout_s, limits=limits)


class AnthropicProvider:
    name = "anthropic"

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        timeout_s: float = 60.0,
        max_connections: int = 200,
        http: str = "auto",
        sdk_spans: bool = True,
        calls: str = "direct",
    ) -> None:
        import anthropic  # imported here: the submit path and offline jobs never pay for it

        self._anthropic = anthropic
        self.transport = http_transport(http)
        http_client = _http_client(self.transport, timeout_s, max_connections)
        kwargs: dict[str, Any] = {
            "api_key": api_key,
            "max_retries": 0,
            "timeout": timeout_s,
            "http_client": http_client,
        }
        sdk_spans = sdk_spans and _tracer_configured()
        if not sdk_spans:
            # with ours on, our GenAI span per attempt covers the call and the SDK's would be a second one;
            # with no tracer provider set its spans record nothing, yet building them cost ~5% of a job's CPU
            kwargs["open_telemetry"] = False
        if base_url:
            kwargs["base_url"] = base_url
        self.client = anthropic.AsyncAnthropic(**kwargs)
        # a plain call skips the SDK's request layer unless asked for, or its spans (recorded per call) are wanted
        direct = calls == "direct" and not sdk_spans and DirectMessages.usable(self.client)
        self._direct = DirectMessages(self.client, http_client) if direct else None

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        """The Messages API request body: what the SDK would send, and the direct path sends."""
        body: dict[str, Any] = {
            "model": request.model_id,
            "max_tokens": request.max_tokens,
            "system": request.system,
            "messages": messages(
                request.history,
                request.user,
                request.cache_prefix_chars,
                request.cache_history,
                request.results,
                request.images,
            ),
            **tools(*offered(request)),
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        return body

    async def generate(self, request: ChatRequest, *, timeout_s: float) -> ProviderResult:
        try:
            if self._direct is not None:
                response = await self._direct.create(self._body(request), timeout_s)
            else:
                response = (
                    await self.client.messages.with_raw_response.create(
                        **_sdk_args(self._body(request)), timeout=timeout_s
                    )
                ).http_response
        except Exception as e:
            raise self._error(e) from None
        return _refused(_reply(response))

    async def stream(
        self, request: ChatRequest, *, timeout_s: float, on_delta: Callable[[str], None]
    ) -> ProviderResult:
        """The Messages API's server-sent events; done only at `message_stop`."""
        s = _StreamState()
        try:
            events = await self.client.messages.create(**_sdk_args(self._body(request)), timeout=timeout_s, stream=True)
            async for ev in events:
                if (piece := s.take(ev)) is not None:
                    on_delta(piece)
        except Exception as e:
            err = self._error(e, mid_stream=bool(s.text) or s.started)
            err.partial = s.result() if s.started else None
            raise err from None
        if not s.stopped:
            raise ProviderError(
                f"anthropic: the stream ended before message_stop ({len(''.join(s.text))} characters "
                "in); not a complete reply",
                transport="connection",
                partial=s.result(),
            )
        return _refused(s.result())

    async def submit_batch(self, items: list[tuple[str, ChatRequest]]) -> str:
        """Message Batches: `custom_id` is the job id; the params are what an online call would send."""
        requests = [{"custom_id": cid, "params": self._body(r)} for cid, r in items]
        try:
            batch = await self.client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
        except Exception as e:
            raise self._error(e) from None
        return str(batch.id)

    async def batch_results(self, batch_id: str) -> dict[str, ProviderResult | ProviderError] | None:
        try:
            batch = await self.client.messages.batches.retrieve(batch_id)
            if batch.processing_status != "ended":
                return None
            out: dict[str, ProviderResult | ProviderError] = {}
            async for item in await self.client.messages.batches.results(batch_id):
                out[item.custom_id] = _batch_item(item.result)
        except Exception as e:
            raise self._error(e) from None
        return out

    def _error(self, e: Exception, *, mid_stream: bool = False) -> ProviderError:
        import httpx2  # the direct path's transport failures are httpx2's own, unwrapped by the SDK

        a = self._anthropic
        if isinstance(e, ProviderError):
            return e
        if isinstance(e, (a.APITimeoutError, httpx2.TimeoutException, TimeoutError)):
            return ProviderError(f"anthropic: request timed out: {e or type(e).__name__}", transport="timeout")
        if isinstance(e, (a.APIConnectionError, httpx2.TransportError)):
            return ProviderError(f"anthropic: connection failed: {e or type(e).__name__}", transport="connection")
        if isinstance(e, a.APIResponseValidationError):
            return ProviderError(f"anthropic: malformed reply: {e}", malformed=True, body=_body(e))
        if isinstance(e, a.APIStatusError):
            body = _body(e) if not mid_stream else str(getattr(e, "body", "") or e)[:4000]
            if mid_stream or e.status_code == 200:  # an `error` event inside a 200 stream: overloaded and the like
                return ProviderError(
                    f"anthropic: error event mid-stream: {getattr(e, 'message', e)}",
                    status_code=_stream_status(body or ""),
                    body=body,
                )
            return http_error(e.status_code, e.response.headers, body, str(getattr(e, "message", e)))
        if isinstance(e, ValueError):  # a 2xx whose body isn't JSON
            return ProviderError(f"anthropic: malformed reply: {e}", malformed=True)
        return ProviderError(f"anthropic: {type(e).__name__}: {e}", transport="connection")

    async def count_tokens(self, model_id: str, system: str, user: str, history: tuple[Turn, ...] = ()) -> int:
        """The model's own input-token count (Anthropic's free count-tokens endpoint)."""
        r = await self.client.messages.count_tokens(model=model_id, system=system, messages=messages(history, user))
        return int(r.input_tokens)

    async def aclose(self) -> None:
        await self.client.close()


class _StreamState:
    """What a stream has said so far: text, usage, stop reason, and whether it ended properly."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.deltas = 0
        self.input_tokens = self.output_tokens = self.cache_read = self.cache_write = 0
        self.raw_stop: str | None = None
        self.started = self.stopped = False

    def take(self, ev: Any) -> str | None:
        t = getattr(ev, "type", None)
        if t == "message_start":
            u = ev.message.usage
            self.started = True
            self.input_tokens, self.output_tokens = int(u.input_tokens), int(u.output_tokens or 0)
            self.cache_read = int(getattr(u, "cache_read_input_tokens", None) or 0)
            self.cache_write = int(getattr(u, "cache_creation_input_tokens", None) or 0)
        elif t == "content_block_delta" and getattr(ev.delta, "type", None) == "text_delta":
            self.text.append(ev.delta.text)
            self.deltas += 1
            return str(ev.delta.text)
        elif t == "message_delta":
            self.raw_stop = ev.delta.stop_reason or self.raw_stop
            if getattr(ev, "usage", None) is not None and ev.usage.output_tokens is not None:
                self.output_tokens = int(ev.usage.output_tokens)  # cumulative, per the API
        elif t == "message_stop":
            self.stopped = True
        return None

    def result(self) -> ProviderResult:
        # a cut stream may never have reported its output usage: each delta received was at least a token
        output = max(self.output_tokens, self.deltas)
        return _result("".join(self.text), self.input_tokens, output, self.cache_read, self.raw_stop, self.cache_write)


def _result(
    text: str,
    input_tokens: Any,
    output_tokens: Any,
    cache_read: Any,
    raw_stop: str | None,
    cache_write: Any = 0,
    calls: list[ToolCall] | None = None,
) -> ProviderResult:
    """Anthropic's `input_tokens` already excludes cache reads and writes: each is billed at its own price."""
    return ProviderResult(
        text=text,
        tool_calls=calls or [],
        input_tokens=int(input_tokens),
        output_tokens=int(output_tokens),
        cache_read_tokens=int(cache_read or 0),
        cache_write_tokens=int(cache_write or 0),
        stop_reason=STOP_REASONS.get(raw_stop or "", "other"),
        raw_stop_reason=raw_stop,
    )


def _sdk_args(body: dict[str, Any]) -> dict[str, Any]:
    """`messages.create`'s arguments for a wire body. SDK 1.0 dropped the sampling parameters from its signature
    (a TypeError before any request); the API still takes them on the models that allow them, so they ride in
    `extra_body`, which sends the same bytes."""
    args = dict(body)
    if "temperature" in args:
        args["extra_body"] = {"temperature": args.pop("temperature")}
    return args


def _reply(http: Any) -> ProviderResult:
    """A raw reply (either call path's) read from the Messages API's JSON itself: the SDK's typed model of it (a
    fifth of the call's CPU) is skipped, since only text, usage and stop reason are read."""
    try:
        msg = json.loads(http.content)
        text, calls = reply_content(msg["content"])
        u = msg["usage"]
        return _result(
            text,
            u["input_tokens"],
            u["output_tokens"],
            u.get("cache_read_input_tokens"),
            msg.get("stop_reason"),
            u.get("cache_creation_input_tokens"),
            calls,
        )
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise ProviderError(
            f"anthropic: malformed reply: {type(e).__name__}: {e}", malformed=True, body=http.text[:2000]
        ) from None


def _batch_item(result: Any) -> ProviderResult | ProviderError:
    """One batch request's outcome: its reply, or why it must be sent again online."""
    if result.type != "succeeded":
        detail = getattr(getattr(getattr(result, "error", None), "error", None), "message", None)
        return ProviderError(
            f"anthropic: batch request {result.type}" + (f": {detail}" if detail else ""), transport="connection"
        )
    m = result.message
    text, calls = reply_content(m.content)
    u = m.usage
    try:
        return _refused(
            _result(
                text,
                u.input_tokens,
                u.output_tokens,
                getattr(u, "cache_read_input_tokens", None),
                m.stop_reason,
                getattr(u, "cache_creation_input_tokens", None),
                calls,
            )
        )
    except ProviderError as e:
        return e


def _refused(result: ProviderResult) -> ProviderResult:
    if result.stop_reason == "refusal":
        raise ProviderError(
            "anthropic: the model refused on content policy grounds", content_policy=True, status_code=200
        )
    return result


def _stream_status(body: str) -> int:
    """The HTTP status an `error` event's type stands for, so it is classified like the same error up front."""
    for kind, status in (("overloaded", 529), ("rate_limit", 429), ("api_error", 500), ("invalid_request", 400)):
        if kind in body:
            return status
    return 500


def _body(e: Exception) -> str | None:
    resp = getattr(e, "response", None)
    try:
        return resp.text[:4000] if resp is not None else None
    except Exception:
        return None
