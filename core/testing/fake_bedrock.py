"""A fake Bedrock runtime (ASGI): `POST /model/{modelId}/converse` and `converse-stream`, for tests over real HTTP,
with the rules Converse enforces (a conversation starts with a user turn and alternates, no blank text blocks, tool
results answer the calls before them)."""

from __future__ import annotations

import itertools
import json
import re
import struct
import zlib
from typing import Any

from core.testing import fake_tools
from core.testing.fake_asgi import Streamed
from core.testing.fake_providers import _answer, _Fake, _halves, _off_schema

_BEDROCK_PATH = re.compile(r"^/model/(?P<model>.+)/converse(?P<stream>-stream)?$")


def _bedrock_stray(messages: list[dict[str, Any]]) -> str | None:
    for before, m in itertools.pairwise(messages):
        calls = {b["toolUse"]["toolUseId"] for b in before["content"] if "toolUse" in b}
        results = {b["toolResult"]["toolUseId"] for b in m["content"] if "toolResult" in b}
        if stray := fake_tools.unanswered(calls, results):
            return stray
    first = {b["toolResult"]["toolUseId"] for b in messages[0]["content"] if "toolResult" in b}
    return fake_tools.unanswered(set(), first)


class FakeBedrock(_Fake):
    """`POST /model/{modelId}/converse`, the Bedrock runtime's Converse API (SigV4 is not checked)."""

    def _tool_reply(self, req: dict[str, Any], answer: str, in_tokens: int) -> tuple[int, Any, dict[str, str]] | None:
        """The toolUse `fake_tools.pick` makes for a request with a toolConfig (None: a text reply)."""
        config, last = req["toolConfig"], req["messages"][-1]["content"]
        choice = config.get("toolChoice") or {"auto": {}}
        tools = [(t["toolSpec"]["name"], t["toolSpec"]["inputSchema"]["json"]) for t in config["tools"]]
        named = choice["tool"]["name"] if "tool" in choice else None
        answered = any("toolResult" in b for b in last)
        tool = fake_tools.pick(tools, "any" if "any" in choice else "auto", named, answered)
        if tool is None:
            return None
        name, value = tool[0], fake_tools.arguments(tool[1], answer, _off_schema(self))
        use = {"toolUse": {"toolUseId": f"tooluse_{len(req['messages'])}", "name": name, "input": value}}
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
        if any(not b.get("text", "x") for msg in req["messages"] for b in msg["content"]):
            return err(400, "ValidationException", "The text field in the ContentBlock object is blank.")
        if (stray := _bedrock_stray(req["messages"])) is not None:
            return err(400, "ValidationException", f"The toolResult blocks contain an unknown toolUseId: {stray}")

        if outcome == "429":
            return err(429, "ThrottlingException", "Too many requests, please wait before trying again.")
        if outcome == "529":
            return err(503, "ServiceUnavailableException", "The service is temporarily overloaded.")
        if outcome == "400_context":
            return err(400, "ValidationException", "Input is too long for requested model.")
        text_in = " ".join(b.get("text", "") for msg in req["messages"] for b in msg["content"])
        last = " ".join(
            b.get("text") or " ".join(c["text"] for c in b.get("toolResult", {}).get("content", []))
            for b in req["messages"][-1]["content"]
        )
        answer = "" if outcome == "refusal" else _answer(text_in, last)
        if req.get("toolConfig") and outcome != "refusal" and (r := self._tool_reply(req, answer, len(text_in) // 4)):
            return r
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
