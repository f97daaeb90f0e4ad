"""Fake OpenAI Chat Completions and Bedrock Converse servers (ASGI), for tests over real HTTP.

Same answer shape as the fake Anthropic server (cites the first two supplied documents), each with
a script of outcomes: "ok", "429", "529" (overloaded), "400_context" (input too long), "refusal".
`calls` counts requests; `models` records which model id each request named.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from core.testing.fake_anthropic import DOC_ID, read_request

_BEDROCK_PATH = re.compile(r"^/model/(?P<model>.+)/converse$")


def _answer(text_in: str) -> str:
    cites = DOC_ID.findall(text_in)[:2]
    question = text_in.rsplit("Question:", 1)[-1].strip()[:80]
    return f"Fake answer about: {question}" + "".join(f" [{c}]" for c in cites)


class _Fake:
    def __init__(self, script: list[str] | None = None) -> None:
        self.script = list(script or [])
        self.calls: Counter[str] = Counter()
        self.models: list[str] = []
        self.headers: list[dict[str, str]] = []

    def _next(self) -> str:
        return self.script.pop(0) if self.script else "ok"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        request = await read_request(scope, receive, send)
        if request is None:
            return
        body, headers = request
        status, payload, extra = self.handle(scope["method"], scope["path"], scope.get("query_string", b"").decode(),
                                             headers, body)
        data = json.dumps(payload).encode()
        hs = [(b"content-type", b"application/json")] + [(k.encode(), v.encode()) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": hs})
        await send({"type": "http.response.body", "body": data})

    def handle(self, method: str, path: str, query: str, headers: dict[str, str], body: bytes
               ) -> tuple[int, Any, dict[str, str]]:
        raise NotImplementedError


class FakeOpenAI(_Fake):
    """`POST /v1/chat/completions` (OpenAI, vLLM, Ollama) and Azure's deployment URL with api-version."""

    def __init__(self, script: list[str] | None = None, *, api_key: str = "test-key") -> None:
        super().__init__(script)
        self.api_key = api_key

    def handle(self, method, path, query, headers, body):  # type: ignore[override]
        azure = re.match(r"^/openai/deployments/(?P<dep>[^/]+)/chat/completions$", path)
        if method != "POST" or not (path == "/v1/chat/completions" or azure):
            return 404, {"error": {"message": "no such route", "type": "invalid_request_error"}}, {}
        if azure and "api-version=" not in query:
            return 400, {"error": {"message": "api-version is required", "code": "missing_api_version"}}, {}
        key = headers.get("api-key") if azure else headers.get("authorization", "").removeprefix("Bearer ")
        if key != self.api_key:
            return 401, {"error": {"message": "invalid api key", "type": "invalid_request_error"}}, {}
        self.headers.append(headers)
        req = json.loads(body)
        model = azure.group("dep") if azure else req["model"]
        self.models.append(model)
        outcome = self._next()
        self.calls[outcome] += 1
        if outcome == "429":
            return 429, {"error": {"message": "Rate limit reached", "type": "rate_limit_exceeded"}}, {"retry-after": "1"}
        if outcome == "529":
            return 503, {"error": {"message": "The server is overloaded", "type": "server_error"}}, {}
        if outcome == "400_context":
            return 400, {"error": {"message": "This model's maximum context length is 8192 tokens.",
                                   "code": "context_length_exceeded"}}, {}
        text_in = " ".join(m["content"] for m in req["messages"] if m["role"] == "user")
        finish = "content_filter" if outcome == "refusal" else "stop"
        answer = "" if outcome == "refusal" else _answer(text_in)
        prompt_tokens = max(1, len(text_in) // 4)
        return 200, {
            "id": "chatcmpl-fake", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": max(1, len(answer) // 4),
                      "total_tokens": prompt_tokens + len(answer) // 4,
                      "prompt_tokens_details": {"cached_tokens": 0}},
        }, {}


class FakeBedrock(_Fake):
    """`POST /model/{modelId}/converse`, the Bedrock runtime's Converse API (SigV4 is not checked)."""

    def handle(self, method, path, query, headers, body):  # type: ignore[override]
        from urllib.parse import unquote

        m = _BEDROCK_PATH.match(path)
        if method != "POST" or not m:
            return 404, {"message": "UnknownOperationException"}, {"x-amzn-errortype": "UnknownOperationException"}
        if not headers.get("authorization", "").startswith("AWS4-HMAC-SHA256"):
            return 403, {"message": "Missing Authentication Token"}, {"x-amzn-errortype": "AccessDeniedException"}
        self.headers.append(headers)
        self.models.append(unquote(m.group("model")))
        req = json.loads(body)
        outcome = self._next()
        self.calls[outcome] += 1

        def err(status: int, code: str, message: str) -> tuple[int, Any, dict[str, str]]:
            return status, {"message": message}, {"x-amzn-errortype": f"{code}:http://internal.amazon.com/"}

        if outcome == "429":
            return err(429, "ThrottlingException", "Too many requests, please wait before trying again.")
        if outcome == "529":
            return err(503, "ServiceUnavailableException", "The service is temporarily overloaded.")
        if outcome == "400_context":
            return err(400, "ValidationException", "Input is too long for requested model.")
        text_in = " ".join(b.get("text", "") for msg in req["messages"] for b in msg["content"])
        answer = "" if outcome == "refusal" else _answer(text_in)
        in_tokens, out_tokens = max(1, len(text_in) // 4), max(1, len(answer) // 4)
        return 200, {
            "output": {"message": {"role": "assistant", "content": [{"text": answer}]}},
            "stopReason": "guardrail_intervened" if outcome == "refusal" else "end_turn",
            "usage": {"inputTokens": in_tokens, "outputTokens": out_tokens, "totalTokens": in_tokens + out_tokens},
            "metrics": {"latencyMs": 1},
        }, {}
