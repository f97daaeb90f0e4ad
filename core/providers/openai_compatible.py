"""Chat Completions over HTTP: OpenAI, Azure OpenAI, vLLM, Ollama, LiteLLM and other servers
speaking that API.

The client is `httpx2` (what the Anthropic SDK itself now uses): httpx 0.28, which the `openai`
SDK depends on, slows sharply at ~100 concurrent async requests, exactly the load a worker runs.
One client per process; no retries here (governance owns them).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from core.models import ProviderResult
from core.providers.base import ChatRequest, ProviderError, looks_like_context_overflow
from core.providers.openai_wire import chat_messages, reply_message, tools
from core.tooling import ToolCall

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "content_filter": "refusal", "tool_calls": "tool_use"}


class OpenAICompatibleProvider:
    name = "openai_compatible"

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        timeout_s: float = 60.0,
        max_connections: int = 200,
        api_style: str = "openai",
        api_version: str | None = None,
    ) -> None:
        import httpx2

        self._httpx = httpx2
        self.api_style = api_style
        self.api_version = api_version
        headers: dict[str, str] = {}  # each request sets its own content type (JSON, or a batch file's multipart)
        if api_key:
            headers.update({"api-key": api_key} if api_style == "azure" else {"authorization": f"Bearer {api_key}"})
        self.client = httpx2.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=timeout_s,
            limits=httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    def _url(self, model_id: str) -> tuple[str, dict[str, str]]:
        if self.api_style == "azure":  # model_id is the deployment name
            return f"/openai/deployments/{model_id}/chat/completions", {"api-version": self.api_version or "2024-10-21"}
        return "/chat/completions", {}

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "messages": chat_messages(request.system, request.history, request.user, request.results, request.images),
            "max_tokens": request.max_tokens,
            **tools(request.tools, request.tool_choice),
        }
        if self.api_style != "azure":
            body["model"] = request.model_id
        if (fmt := request.response_format) is not None:  # structured outputs, checked by us whatever the server does
            body["response_format"] = (
                {"type": "json_schema", "json_schema": {"name": fmt.name, "schema": fmt.json_schema, "strict": False}}
                if fmt.json_schema is not None
                else {"type": "json_object"}
            )
        if request.temperature is not None:
            body["temperature"] = request.temperature
        return body

    async def generate(self, request: ChatRequest, *, timeout_s: float) -> ProviderResult:
        if request.api == "moderations":
            return await self._moderate(request, timeout_s)
        url, params = self._url(request.model_id)
        text = await self._post(url, params, self._body(request), timeout_s)
        try:
            data = json.loads(text)
            choice = data["choices"][0]
            result = _result(*reply_message(choice["message"]), data.get("usage") or {}, choice.get("finish_reason"))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            raise ProviderError(
                f"openai_compatible: malformed reply: {e!r}", malformed=True, body=text[:4000]
            ) from None
        return _refused(result)

    async def _moderate(self, request: ChatRequest, timeout_s: float) -> ProviderResult:
        """The moderation endpoint classifies the question; the categories it flags are the reply, as the JSON a
        classification prompt's reply has (`categories`, `reason`). It reports no tokens: OpenAI bills it nothing."""
        body = {"model": request.model_id, "input": request.question}
        text = await self._post("/moderations", {}, body, timeout_s)
        try:
            categories = json.loads(text)["results"][0]["categories"]
            flagged = sorted(str(name) for name, hit in categories.items() if hit)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            raise ProviderError(
                f"openai_compatible: malformed moderation reply: {e!r}", malformed=True, body=text[:4000]
            ) from None
        reason = f"{request.model_id} flagged " + (", ".join(flagged) if flagged else "nothing")
        return _result(json.dumps({"categories": flagged, "reason": reason}), [], {}, "stop")

    async def _post(self, url: str, params: dict[str, str], body: dict[str, Any], timeout_s: float) -> str:
        h = self._httpx
        try:
            resp = await self.client.post(url, params=params, json=body, timeout=timeout_s)
        except h.TimeoutException as e:
            raise ProviderError(f"openai_compatible: request timed out: {e!r}", transport="timeout") from None
        except h.TransportError as e:
            raise ProviderError(f"openai_compatible: connection failed: {e!r}", transport="connection") from None
        if resp.status_code >= 400:
            raise _status_error(resp.status_code, dict(resp.headers), resp.text)
        return str(resp.text)

    async def stream(
        self, request: ChatRequest, *, timeout_s: float, on_delta: Callable[[str], None]
    ) -> ProviderResult:
        """`stream: true` with usage in the final chunk; done only at a finish_reason and `[DONE]`."""
        if request.api == "moderations":  # nothing to stream: a classification comes whole
            result = await self._moderate(request, timeout_s)
            on_delta(result.text)
            return result
        h = self._httpx
        url, params = self._url(request.model_id)
        body = {**self._body(request), "stream": True, "stream_options": {"include_usage": True}}
        s = _Chunks()
        try:
            async with self.client.stream("POST", url, params=params, json=body, timeout=timeout_s) as resp:
                if resp.status_code >= 400:
                    raise _status_error(
                        resp.status_code, dict(resp.headers), (await resp.aread()).decode("utf-8", "replace")
                    )
                async for line in resp.aiter_lines():
                    if piece := s.take(line):
                        on_delta(piece)
        except h.TimeoutException as e:
            raise ProviderError(
                f"openai_compatible: stream timed out: {e!r}", transport="timeout", partial=s.result()
            ) from None
        except h.TransportError as e:
            raise ProviderError(
                f"openai_compatible: connection failed: {e!r}", transport="connection", partial=s.result()
            ) from None
        except ProviderError as e:
            e.partial = e.partial or (s.result() if s.text else None)
            raise
        if not (s.done and s.finish is not None):
            raise ProviderError(
                f"openai_compatible: the stream ended before its finish_reason and [DONE] "
                f"({len(''.join(s.text))} characters in)",
                transport="connection",
                partial=s.result(),
            )
        return _refused(s.result())

    @property
    def batches(self) -> bool:
        """The Batch API as OpenAI serves it (Azure's deployments put it elsewhere: their jobs run online)."""
        return self.api_style != "azure"

    async def submit_batch(self, items: list[tuple[str, ChatRequest]]) -> str:
        """The Batch API: the requests as a JSONL file (`custom_id` = the job id), then a batch over it."""
        lines = "\n".join(
            json.dumps({"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": self._body(r)})
            for cid, r in items
        )
        uploaded = await self._call(
            "POST",
            "/files",
            files={"file": ("batch.jsonl", lines.encode(), "application/jsonl")},
            data={"purpose": "batch"},
        )
        batch = await self._call(
            "POST",
            "/batches",
            json={"input_file_id": uploaded["id"], "completion_window": "24h", "endpoint": "/v1/chat/completions"},
        )
        return str(batch["id"])

    async def batch_results(self, batch_id: str) -> dict[str, ProviderResult | ProviderError] | None:
        batch = await self._call("GET", f"/batches/{batch_id}")
        if batch["status"] in ("validating", "in_progress", "finalizing", "cancelling"):
            return None
        out: dict[str, ProviderResult | ProviderError] = {}
        for key in ("output_file_id", "error_file_id"):  # an expired batch: what finished, and what did not
            if batch.get(key):
                text = await self._call("GET", f"/files/{batch[key]}/content", raw=True)
                for line in filter(None, text.splitlines()):
                    item = json.loads(line)
                    out[item["custom_id"]] = _batch_item(item)
        return out

    async def _call(self, method: str, url: str, *, raw: bool = False, **kwargs: Any) -> Any:
        h = self._httpx
        try:
            resp = await self.client.request(method, url, **kwargs)
        except h.TransportError as e:
            raise ProviderError(f"openai_compatible: connection failed: {e!r}", transport="connection") from None
        if resp.status_code >= 400:
            raise _status_error(resp.status_code, dict(resp.headers), resp.text)
        return resp.text if raw else resp.json()

    async def aclose(self) -> None:
        await self.client.aclose()


class _Chunks:
    """What a Chat Completions stream has said so far."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.usage: dict[str, Any] = {}
        self.finish: str | None = None
        self.done = False

    def take(self, line: str) -> str | None:
        if not line.startswith("data:"):
            return None
        data = line[5:].strip()
        if data == "[DONE]":
            self.done = True
            return None
        try:
            chunk = json.loads(data)
        except ValueError:
            raise ProviderError(f"openai_compatible: malformed stream chunk: {data[:200]}", malformed=True) from None
        if "error" in chunk:  # an error mid-stream: classified like the status its type stands for
            err = json.dumps(chunk["error"])[:2000]
            raise ProviderError(
                f"openai_compatible: error mid-stream: {err}",
                body=err,
                status_code=429 if "rate_limit" in err else 503 if "overloaded" in err else 500,
            )
        self.usage = chunk.get("usage") or self.usage
        for choice in chunk.get("choices") or []:
            self.finish = choice.get("finish_reason") or self.finish
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                self.text.append(piece)
                return str(piece)
        return None

    def result(self) -> ProviderResult:
        usage = self.usage or {"completion_tokens": len(self.text)}  # no usage chunk yet: each piece >= 1 token
        return _result("".join(self.text), [], usage, self.finish)


def _result(text: str, calls: list[ToolCall], usage: dict[str, Any], raw_stop: str | None) -> ProviderResult:
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    return ProviderResult(
        text=text,
        tool_calls=calls,
        input_tokens=int(usage.get("prompt_tokens", 0)) - cached,  # prompt_tokens includes cache reads
        output_tokens=int(usage.get("completion_tokens", 0)),
        cache_read_tokens=cached,
        stop_reason=STOP_REASONS.get(raw_stop or "", "other"),
        raw_stop_reason=raw_stop,
    )


def _batch_item(item: dict[str, Any]) -> ProviderResult | ProviderError:
    """One line of a batch's output or error file: the reply, or why it must run online."""
    resp, err = item.get("response") or {}, item.get("error")
    if err or resp.get("status_code") != 200:
        detail = (err or {}).get("message") or (err or {}).get("code") or f"HTTP {resp.get('status_code')}"
        return ProviderError(f"openai_compatible: batch request failed: {detail}", transport="connection")
    try:
        choice = resp["body"]["choices"][0]
        return _refused(
            _result(*reply_message(choice["message"]), resp["body"].get("usage") or {}, choice.get("finish_reason"))
        )
    except ProviderError as e:
        return e
    except (KeyError, IndexError, TypeError) as e:
        return ProviderError(f"openai_compatible: malformed batch result: {e!r}", malformed=True)


def _refused(result: ProviderResult) -> ProviderResult:
    if result.stop_reason == "refusal":
        raise ProviderError(
            "openai_compatible: the reply was stopped by the content filter", content_policy=True, status_code=200
        )
    return result


def _status_error(status: int, headers: dict[str, str], text: str) -> ProviderError:
    return ProviderError(
        f"openai_compatible: HTTP {status}: {text[:300]}",
        status_code=status,
        headers=headers,
        body=text[:4000],
        context_overflow=looks_like_context_overflow(status, text),
        content_policy=status == 400 and "content_filter" in text,
    )
