"""A fake OpenAI Chat Completions server (ASGI), for tests over real HTTP, and what the fakes of other APIs share
(`core/testing/fake_bedrock.py` is Bedrock's Converse).

Same answer shape as the fake Anthropic server (cites the first two supplied documents), each with
a script of outcomes: "ok", "429", "529" (overloaded), "400_context" (input too long), "refusal", and for
streamed requests "cut" (the stream stops half-way) and "stream_error" (an error chunk half-way).
`calls` counts requests; `models` records which model id each request named.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from core.testing import fake_tools
from core.testing.fake_anthropic import DOC_ID
from core.testing.fake_asgi import Streamed, read_request
from core.testing.fake_openai_batches import FakeOpenAIBatches


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


def _openai_stray(messages: list[dict[str, Any]]) -> str | None:
    """A `tool` message whose id no tool call of the assistant message before its run answers."""
    calls: set[str] = set()
    for m in messages:
        if m["role"] == "assistant":
            calls = {c["id"] for c in m.get("tool_calls") or []}
        elif m["role"] == "tool" and (stray := fake_tools.unanswered(calls, {m["tool_call_id"]})):
            return stray
    return None


def _text(content: Any) -> str:
    """A message's text: the string, or its text parts (an image part has none)."""
    return content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)


def _off_schema(fake: _Fake) -> bool:
    off = fake.off_schema > 0
    fake.off_schema = max(0, fake.off_schema - 1)
    return off


class FakeOpenAI(_Fake):
    """`POST /v1/chat/completions` (OpenAI, vLLM, Ollama), Azure's deployment URL with api-version, and
    `POST /v1/moderations`."""

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

    def _call(self, req: dict[str, Any], answer: str) -> dict[str, Any] | None:
        """The tool call `fake_tools.pick` makes for a request offering tools, as a Chat Completions tool call."""
        choice = req.get("tool_choice")
        named = choice["function"]["name"] if isinstance(choice, dict) else None
        tools = [(t["function"]["name"], t["function"]["parameters"]) for t in req.get("tools", [])]
        answered = req["messages"][-1]["role"] == "tool" or (
            len(req["messages"]) > 1 and req["messages"][-2]["role"] == "tool"
        )
        tool = fake_tools.pick(tools, choice if isinstance(choice, str) else None, named, answered)
        if tool is None:
            return None
        args = fake_tools.arguments(tool[1], answer, _off_schema(self))
        name = tool[0]
        return {
            "id": f"call_{len(req['messages'])}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(args)},
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
        if method == "POST" and path == "/v1/moderations":
            return self._moderations(headers, body)
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
        if (stray := _openai_stray(req["messages"])) is not None:
            return (
                400,
                {"error": {"message": f"tool_call_id {stray} answers no tool call", "type": "invalid_request_error"}},
                {},
            )
        return self._reply(req, model, outcome)

    def _moderations(self, headers: dict[str, str], body: bytes) -> tuple[int, Any, dict[str, str]]:
        """OpenAI's moderation endpoint, in its reply's shape: a category is flagged when its name is in the input."""
        if headers.get("authorization", "").removeprefix("Bearer ") != self.api_key:
            return 401, {"error": {"message": "invalid api key", "type": "invalid_request_error"}}, {}
        req = json.loads(body)
        self.bodies.append(req)
        self.models.append(req["model"])
        text = str(req["input"]).lower()
        flags = {c: c.replace("/", " ") in text for c in MODERATION_CATEGORIES}
        result = {
            "flagged": any(flags.values()),
            "categories": flags,
            "category_scores": {c: 0.97 if hit else 0.001 for c, hit in flags.items()},
        }
        return 200, {"id": "modr-fake", "model": req["model"], "results": [result]}, {}

    def _reply(self, req: dict[str, Any], model: str, outcome: str) -> tuple[int, Any, dict[str, str]]:
        """A 200: the answer (a tool call when `fake_tools.pick` makes one), whole or streamed."""
        users = [_text(m["content"]) for m in req["messages"] if m["role"] in ("user", "tool") and m["content"]]
        text_in = " ".join(users)
        finish = "content_filter" if outcome == "refusal" else "stop"
        answer = "" if outcome == "refusal" else self._formatted(req, _answer(text_in, users[-1]))
        prompt_tokens = max(1, len(text_in) // 4)
        message: dict[str, Any] = {"role": "assistant", "content": answer}
        if outcome != "refusal" and (call := self._call(req, answer)) is not None:
            message, finish = {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
            answer = call["function"]["arguments"]  # what the completion's tokens were spent on
        elif req.get("stream"):
            return 200, _openai_stream(answer, finish, prompt_tokens, outcome), {}
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": max(1, len(answer) // 4),
            "total_tokens": prompt_tokens + len(answer) // 4,
            "prompt_tokens_details": {"cached_tokens": 0},
        }
        choice = {"index": 0, "message": message, "finish_reason": finish}
        return (
            200,
            {"id": "chatcmpl-fake", "object": "chat.completion", "model": model, "choices": [choice], "usage": usage},
            {},
        )


MODERATION_CATEGORIES = (  # omni-moderation's
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent", "self-harm",
    "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors", "violence", "violence/graphic",
)  # fmt: skip


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
