"""Fake OpenAI Chat Completions and Bedrock Converse servers (ASGI), for tests over real HTTP.

Same answer shape as the fake Anthropic server (cites the first two supplied documents), each with
a script of outcomes: "ok", "429", "529" (overloaded), "400_context" (input too long), "refusal", and for
streamed requests "cut" (the stream stops half-way) and "stream_error" (an error chunk half-way).
`calls` counts requests; `models` records which model id each request named.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from typing import Any

from core.testing.fake_anthropic import DOC_ID
from core.testing.fake_asgi import Streamed, read_request
from core.testing.fake_openai_batches import FakeOpenAIBatches

_BEDROCK_PATH = re.compile(r"^/model/(?P<model>.+)/converse(?P<stream>-stream)?$")


def _answer(text_in: str, last: str | None = None) -> str:
    """A reply about the last user turn (`last`; the whole input when not given), citing ids found anywhere."""
    cites = DOC_ID.findall(text_in)[:2]
    question = (text_in if last is None else last).rsplit("Question:", 1)[-1].strip()[:80]
    return f"Fake answer about: {question}" + "".join(f" [{c}]" for c in cites)


def _halves(outcome: str, n: int) -> int | None:
    return n // 2 if outcome in ("cut", "stream_error") else None


class _Fake:
    def __init__(self, script: list[str] | None = None) -> None:
        self.script = list(script or [])
        self.calls: Counter[str] = Counter()
        self.models: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.bodies: list[dict[str, Any]] = []  # each request body, as sent
        self.off_schema = 0  # the next this many structured replies are not what their format asks for

    def _next(self) -> str:
        return self.script.pop(0) if self.script else "ok"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        request = await read_request(scope, receive, send)
        if request is None:
            return
        body, headers = request
        status, payload, extra = self.handle(
            scope["method"], scope["path"], scope.get("query_string", b"").decode(), headers, body
        )
        if isinstance(payload, Streamed):
            hs = [(b"content-type", payload.media_type.encode())]
            await send({"type": "http.response.start", "status": status, "headers": hs})
            for piece in payload.pieces:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        data = json.dumps(payload).encode()
        hs = [(b"content-type", b"application/json")] + [(k.encode(), v.encode()) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": hs})
        await send({"type": "http.response.body", "body": data})

    def handle(
        self, method: str, path: str, query: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        raise NotImplementedError


def _off_schema(fake: _Fake) -> bool:
    off = fake.off_schema > 0
    fake.off_schema = max(0, fake.off_schema - 1)
    return off


class FakeOpenAI(_Fake):
    """`POST /v1/chat/completions` (OpenAI, vLLM, Ollama) and Azure's deployment URL with api-version."""

    def __init__(self, script: list[str] | None = None, *, api_key: str = "test-key") -> None:
        super().__init__(script)
        self.api_key = api_key
        self.batch_api = FakeOpenAIBatches(self._complete)

    def _complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """A chat completion for one batch request, answered as an online one would be (no faults)."""
        text_in = " ".join(m["content"] for m in body["messages"] if m["role"] == "user")
        answer = _answer(text_in)
        prompt_tokens, completion = max(1, len(text_in) // 4), max(1, len(answer) // 4)
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion,
            },
        }

    def _formatted(self, req: dict[str, Any], answer: str) -> str:
        """With `response_format`, the answer as JSON in the schema's shape (while `off_schema` lasts: not JSON)."""
        from core.providers.offline import shaped

        fmt = req.get("response_format")
        if not fmt:
            return answer
        if _off_schema(self):
            return "Sure! Here is the JSON you asked for: {answer: " + answer
        schema = fmt.get("json_schema", {}).get("schema")
        return json.dumps(shaped(schema, answer, schema) if schema else {"answer": answer})

    def handle(self, method, path, query, headers, body):
        if path.startswith(("/v1/files", "/v1/batches")):
            key = headers.get("authorization", "").removeprefix("Bearer ")
            if key != self.api_key:
                return 401, {"error": {"message": "invalid api key", "type": "invalid_request_error"}}, {}
            return self.batch_api.handle(method, path, headers, body)
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
        self.bodies.append(req)
        model = azure.group("dep") if azure else req["model"]
        self.models.append(model)
        outcome = self._next()
        self.calls[outcome] += 1
        if (fault := _openai_fault(outcome)) is not None:
            return fault
        users = [m["content"] for m in req["messages"] if m["role"] == "user"]
        text_in = " ".join(users)
        finish = "content_filter" if outcome == "refusal" else "stop"
        answer = "" if outcome == "refusal" else self._formatted(req, _answer(text_in, users[-1]))
        prompt_tokens = max(1, len(text_in) // 4)
        if req.get("stream"):
            return 200, _openai_stream(answer, finish, prompt_tokens, outcome), {}
        return (
            200,
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": finish}],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": max(1, len(answer) // 4),
                    "total_tokens": prompt_tokens + len(answer) // 4,
                    "prompt_tokens_details": {"cached_tokens": 0},
                },
            },
            {},
        )


def _openai_fault(outcome: str) -> tuple[int, Any, dict[str, str]] | None:
    """The error response a scripted fault answers with, or None for an answer."""
    if outcome == "429":
        return (429, {"error": {"message": "Rate limit reached", "type": "rate_limit_exceeded"}}, {"retry-after": "1"})
    if outcome == "529":
        return 503, {"error": {"message": "The server is overloaded", "type": "server_error"}}, {}
    if outcome == "400_context":
        return (
            400,
            {
                "error": {
                    "message": "This model's maximum context length is 8192 tokens.",
                    "code": "context_length_exceeded",
                }
            },
            {},
        )
    return None


class FakeBedrock(_Fake):
    """`POST /model/{modelId}/converse`, the Bedrock runtime's Converse API (SigV4 is not checked)."""

    def _tool_reply(self, tool_config: dict[str, Any], answer: str, in_tokens: int) -> tuple[int, Any, dict[str, str]]:
        from core.providers.offline import shaped

        name = tool_config["toolChoice"]["tool"]["name"]
        [spec] = [t["toolSpec"] for t in tool_config["tools"] if t["toolSpec"]["name"] == name]
        schema = spec["inputSchema"]["json"]
        value = {"unexpected": True} if _off_schema(self) else shaped(schema, answer, schema)
        use = {"toolUse": {"toolUseId": "tooluse_fake", "name": name, "input": value}}
        out = max(1, len(json.dumps(value)) // 4)
        return (
            200,
            {
                "output": {"message": {"role": "assistant", "content": [use]}},
                "stopReason": "tool_use",
                "usage": {"inputTokens": max(1, in_tokens), "outputTokens": out, "totalTokens": in_tokens + out},
                "metrics": {"latencyMs": 1},
            },
            {},
        )

    def handle(self, method, path, query, headers, body):
        from urllib.parse import unquote

        m = _BEDROCK_PATH.match(path)
        if method != "POST" or not m:
            return 404, {"message": "UnknownOperationException"}, {"x-amzn-errortype": "UnknownOperationException"}
        if not headers.get("authorization", "").startswith("AWS4-HMAC-SHA256"):
            return 403, {"message": "Missing Authentication Token"}, {"x-amzn-errortype": "AccessDeniedException"}
        self.headers.append(headers)
        self.models.append(unquote(m.group("model")))
        req = json.loads(body)
        self.bodies.append(req)
        outcome = self._next()
        self.calls[outcome] += 1

        def err(status: int, code: str, message: str) -> tuple[int, Any, dict[str, str]]:
            return status, {"message": message}, {"x-amzn-errortype": f"{code}:http://internal.amazon.com/"}

        roles = [msg["role"] for msg in req["messages"]]
        if roles[0] != "user" or any(a == b for a, b in itertools.pairwise(roles)):  # Converse's rules
            return err(400, "ValidationException", "A conversation must start with a user message and alternate.")

        if outcome == "429":
            return err(429, "ThrottlingException", "Too many requests, please wait before trying again.")
        if outcome == "529":
            return err(503, "ServiceUnavailableException", "The service is temporarily overloaded.")
        if outcome == "400_context":
            return err(400, "ValidationException", "Input is too long for requested model.")
        text_in = " ".join(b.get("text", "") for msg in req["messages"] for b in msg["content"])
        last = " ".join(b.get("text", "") for b in req["messages"][-1]["content"])
        answer = "" if outcome == "refusal" else _answer(text_in, last)
        if (tool := req.get("toolConfig")) and outcome != "refusal":  # structured output: the forced tool's input
            return self._tool_reply(tool, answer, len(text_in) // 4)
        in_tokens, out_tokens = max(1, len(text_in) // 4), max(1, len(answer) // 4)
        if m.group("stream"):
            return 200, _bedrock_stream(answer, in_tokens, outcome), {}
        return (
            200,
            {
                "output": {"message": {"role": "assistant", "content": [{"text": answer}]}},
                "stopReason": "guardrail_intervened" if outcome == "refusal" else "end_turn",
                "usage": {"inputTokens": in_tokens, "outputTokens": out_tokens, "totalTokens": in_tokens + out_tokens},
                "metrics": {"latencyMs": 1},
            },
            {},
        )


def _openai_stream(answer: str, finish: str, prompt_tokens: int, outcome: str) -> Streamed:
    words = [w + " " for w in answer.split(" ")] or [""]
    cut = _halves(outcome, len(words))

    def chunk(delta: dict[str, Any] | None, finish_reason: str | None = None, usage: Any = None) -> bytes:
        c: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}] if delta is not None else [],
            "usage": usage,
        }
        return f"data: {json.dumps(c)}\n\n".encode()

    pieces = [chunk({"role": "assistant", "content": ""})]
    for i, w in enumerate(words):
        if i == cut:
            if outcome == "stream_error":
                pieces.append(b'data: {"error": {"message": "The server is overloaded", "type": "server_error"}}\n\n')
            return Streamed(pieces)
        pieces.append(chunk({"content": w}))
    pieces.append(chunk({}, finish))
    pieces.append(
        chunk(
            None,
            usage={
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(words),
                "total_tokens": prompt_tokens + len(words),
            },
        )
    )
    pieces.append(b"data: [DONE]\n\n")
    return Streamed(pieces)


def _bedrock_stream(answer: str, in_tokens: int, outcome: str) -> Streamed:
    """ConverseStream's reply in the AWS event-stream encoding botocore parses."""
    words = [w + " " for w in answer.split(" ")]
    cut = _halves(outcome, len(words))
    frames = [_frame("messageStart", {"role": "assistant"})]
    for i, w in enumerate(words):
        if i == cut:
            if outcome == "stream_error":
                frames.append(
                    _frame("serviceUnavailableException", {"message": "The service is overloaded."}, kind="exception")
                )
            return Streamed(frames, "application/vnd.amazon.eventstream")
        frames.append(_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": w}}))
    frames += [
        _frame("contentBlockStop", {"contentBlockIndex": 0}),
        _frame("messageStop", {"stopReason": "end_turn"}),
        _frame(
            "metadata",
            {
                "usage": {"inputTokens": in_tokens, "outputTokens": len(words), "totalTokens": in_tokens + len(words)},
                "metrics": {"latencyMs": 1},
            },
        ),
    ]
    return Streamed(frames, "application/vnd.amazon.eventstream")


def _frame(name: str, payload: dict[str, Any], kind: str = "event") -> bytes:
    """One event-stream message: prelude (lengths + CRC), string headers, JSON payload, message CRC."""
    import struct
    import zlib

    type_header = ":exception-type" if kind == "exception" else ":event-type"
    headers = b"".join(
        bytes([len(k)]) + k.encode() + b"\x07" + struct.pack(">H", len(v)) + v.encode()
        for k, v in ((type_header, name), (":content-type", "application/json"), (":message-type", kind))
    )
    body = json.dumps(payload).encode()
    total = 12 + len(headers) + len(body) + 4
    prelude = struct.pack(">II", total, len(headers))
    head = prelude + struct.pack(">I", zlib.crc32(prelude)) + headers + body
    return head + struct.pack(">I", zlib.crc32(head))
