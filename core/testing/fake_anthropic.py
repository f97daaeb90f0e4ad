"""A fake Anthropic Messages API server: real HTTP on loopback, the real wire shape, injectable faults.

Used by the test suite and the benchmarks; also handy for users testing their own configuration
offline. Faults are drawn from a seeded RNG (rates) or forced in order (`script`), so runs repeat.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.testing import fake_tools
from core.testing.fake_asgi import read_request, reset
from core.testing.fake_batches import FakeBatches
from core.testing.fake_cache import PromptCache
from core.testing.fake_faults import BAD_REPLIES, FAULT_REPLIES, _error
from core.testing.fake_stream import Replier, padded, stream_reply
from core.testing.servers import ServerThread, free_port, spawn  # noqa: F401 (what tests and benchmarks import)

if TYPE_CHECKING:
    pass

DOC_ID = re.compile(r'<document id="([^"]+)"')
_MARKER = re.compile(r"\bmarker:([A-Za-z0-9_-]+)")
FAULTS = (
    "429",
    "429_no_retry_after",
    "529",
    "500",
    "timeout",
    "reset",
    "malformed",
    "400",
    "400_context",
    "refusal",
    "stall",
    "trickle",
    "empty",
    "max_tokens",
    "no_usage",
    "absurd_usage",
    "negative_usage",
    "cut",
    "stream_error",
)


@dataclass
class FaultPlan:
    rates: dict[str, float] = field(default_factory=dict)  # fault name → probability per call
    script: list[str] = field(default_factory=list)  # forced outcomes, consumed first ("ok" or a fault)
    retry_after_s: float = 1.0
    latency_s: float = 0.0
    timeout_s: float = 30.0  # how long a "timeout" fault stalls, and a "stall" waits after its headers
    trickle_s: float = 1.0  # a "trickle" reply sends one byte of its body every this many seconds
    seed: int = 1
    rpm: float | None = None  # enforce this many requests per minute (token bucket), 429 beyond
    burst: float | None = None  # bucket capacity in requests; defaults to `rpm` (a full minute, as Anthropic's)
    count_factor: float = 1.0  # /count_tokens answers ceil(chars / 4 × this): a tokenizer unlike ours
    extra_citation: str | None = None  # also cite this id, supplied or not (a hallucinated citation)
    stream_tps: float = 0.0  # a streamed reply sends this many tokens per second (0: as fast as it can)
    stream_tokens: int = 0  # and is padded to at least this many tokens
    off_schema: int = 0  # the next this many structured replies (a forced tool) leave out what the schema requires

    def __post_init__(self) -> None:
        unknown = set(self.rates) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown fault(s) {sorted(unknown)}; choose from {FAULTS}")


class FakeAnthropic:
    """The ASGI app. `stats` counts calls by outcome; `replies_by_marker` counts successes per marker."""

    def __init__(self, plan: FaultPlan | None = None, *, api_key: str = "test-key") -> None:
        self.plan = plan or FaultPlan()
        self.api_key = api_key
        self.rng = random.Random(self.plan.seed)
        self.lock = threading.Lock()
        self.stats: Counter[str] = Counter()
        self.replies_by_marker: Counter[str] = Counter()
        self.billed_by_prompt: Counter[str] = Counter()  # clean 200 replies per distinct user turn (sha256[:16])
        self.billed_text: dict[str, str] = {}  # that turn's text, by the same key
        self.prompt_cache = PromptCache()
        self.batches = FakeBatches(self._answer, self.prompt_cache, shape=self._forced)
        self.first_token_at: dict[str, float] = {}  # wall time of each streamed reply's first token, by marker
        self.history_by_marker: dict[str, list[str]] = {}  # every outcome per `marker:X` in the prompt
        self.requests: list[dict[str, Any]] = []
        self.keep_requests = False
        self._bucket = (self.plan.burst or self.plan.rpm or 0.0, time.monotonic())
        self.accepted_at: list[float] = []
        self.inflight = 0
        self.max_inflight = 0  # most requests in flight at once (concurrency-cap tests)
        self.rejected_at: list[float] = []  # monotonic time of each request let through the rate limit

    def _rate_limited(self) -> float | None:
        """Seconds until the next request is allowed, or None if this one may proceed."""
        if not self.plan.rpm:
            return None
        rate = self.plan.rpm / 60.0
        cap = self.plan.burst or self.plan.rpm
        with self.lock:
            level, ts = self._bucket
            now = time.monotonic()
            level = min(cap, level + (now - ts) * rate)
            if level < 1.0:
                self._bucket = (level, now)
                self.rejected_at.append(now)
                return (1.0 - level) / rate
            self._bucket = (level - 1.0, now)
            self.accepted_at.append(now)
            return None

    def _draw(self) -> str:
        with self.lock:
            if self.plan.script:
                return self.plan.script.pop(0)
            x = self.rng.random()
            acc = 0.0
            for name, rate in self.plan.rates.items():
                acc += rate
                if x < acc:
                    return name
            return "ok"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        request = await read_request(scope, receive, send)
        if request is None:
            return
        body, headers = request
        reply = Replier(send)
        if scope["path"] == "/_stats" and scope["method"] == "GET":  # for benchmarks running us in another process
            return await reply(200, self._stats_body())
        batches = scope["path"].startswith("/v1/messages/batches")
        if not batches and (
            scope["path"] not in ("/v1/messages", "/v1/messages/count_tokens") or scope["method"] != "POST"
        ):
            return await reply(404, _error("not_found_error", "no such route"))
        bearer = headers.get("authorization", "").removeprefix("Bearer ").strip()
        if self.api_key not in (headers.get("x-api-key"), bearer):
            return await reply(401, _error("authentication_error", "invalid x-api-key"))
        if batches:
            status, payload, jsonl = self.batches.handle(scope["method"], scope["path"], body)
            return await reply(status, payload, raw=jsonl.encode() if jsonl is not None else None)
        if scope["path"] == "/v1/messages/count_tokens":
            return await reply(200, self._count_tokens(json.loads(body)))
        try:
            req = json.loads(body)
            _checked = (req["model"], int(req["max_tokens"]), req["messages"])  # the fields every call needs
        except (ValueError, KeyError, TypeError):
            return await reply(400, _error("invalid_request_error", "model, max_tokens and messages are required"))
        if (stray := _stray_result(req["messages"])) is not None:  # as the API refuses it
            return await reply(400, _error("invalid_request_error", f"unexpected tool_use_id in tool_result: {stray}"))
        return await self._messages(req, body, reply, send, receive)

    async def _messages(self, req: dict[str, Any], body: bytes, reply: Any, send: Any, receive: Any) -> None:
        """One Messages API call: the rate limit, then the plan's outcome for it."""
        model, max_tokens, messages = req["model"], int(req["max_tokens"]), req["messages"]
        if self.keep_requests:
            self.requests.append(req)
        wait = self._rate_limited()
        if wait is not None:
            with self.lock:
                self.stats["calls"] += 1
                self.stats["429_rate_limit"] += 1
            return await reply(
                429,
                _error("rate_limit_error", "request rate limit exceeded"),
                {
                    "retry-after": str(max(1, math.ceil(wait))),
                    "anthropic-ratelimit-requests-limit": str(int(self.plan.rpm or 0)),
                },
            )
        marker = _MARKER.search(body.decode("utf-8", "replace"))
        outcome = await self._drawn_after_latency(marker.group(1) if marker else None)
        if outcome == "timeout":
            await asyncio.sleep(self.plan.timeout_s)
            return await reply(500, _error("api_error", "too late"))
        if outcome == "reset":
            return reset(receive)
        if outcome in ("stall", "trickle"):  # a 200 whose body is slow: every read is within a read timeout
            answer = json.dumps(self._answer(model, max_tokens, messages, None)).encode()
            return await reply.slowly(
                answer,
                self.plan.timeout_s if outcome == "stall" else self.plan.trickle_s,
                whole=outcome == "stall",
                give_up_s=self.plan.timeout_s,
            )
        if outcome in FAULT_REPLIES:
            status, payload, extra, raw = FAULT_REPLIES[outcome](self.plan, model)
            return await reply(status, payload, extra, raw)
        return await self._answered(req, outcome, marker.group(1) if marker else None, reply, send)

    async def _answered(self, req: dict[str, Any], outcome: str, tag: str | None, reply: Any, send: Any) -> None:
        """A 200: the reply (streamed or whole), its usage as the API reports it, and the fault it carries."""
        messages = req["messages"]
        answer = self._answer(req["model"], int(req["max_tokens"]), messages, tag)
        system = req.get("system", "")
        system_text = system if isinstance(system, str) else "".join(b.get("text", "") for b in system)
        answer["usage"]["input_tokens"] += len(system_text) // 4  # the system prompt is input too, as the API counts
        answer["usage"] = self.prompt_cache.apply(req, answer["usage"])
        self._forced(req, answer)
        if req.get("stream") and outcome in ("ok", "cut", "stream_error"):
            complete = await stream_reply(
                send,
                answer,
                tps=self.plan.stream_tps,
                pad_to=self.plan.stream_tokens,
                fault=outcome if outcome != "ok" else None,
                first=lambda: self.first_token_at.setdefault(tag or "", time.time()),
            )
            if complete:
                self._billed(messages)
            return None
        if self.plan.stream_tps and self.plan.stream_tokens:  # an unstreamed reply takes as long to generate
            answer = padded(answer, self.plan.stream_tokens)
            await asyncio.sleep(self.plan.stream_tokens / self.plan.stream_tps)
        if outcome not in BAD_REPLIES:
            self._billed(messages)
        return await reply(200, BAD_REPLIES[outcome](answer) if outcome in BAD_REPLIES else answer)

    def _forced(self, req: dict[str, Any], answer: dict[str, Any]) -> None:
        """A request offering tools (structured output's forced one included): the call `fake_tools.pick` makes,
        its input the answer in the tool's schema (or, while the plan's `off_schema` lasts, an input that breaks
        it)."""
        choice = req.get("tool_choice") or {}
        last = req["messages"][-1]["content"]
        answered = isinstance(last, list) and any(b.get("type") == "tool_result" for b in last)
        tools = [(t["name"], t["input_schema"]) for t in req.get("tools", [])]
        tool = fake_tools.pick(tools, choice.get("type"), choice.get("name"), answered)
        if tool is None:
            return
        with self.lock:
            off, self.plan.off_schema = self.plan.off_schema > 0, max(0, self.plan.off_schema - 1)
        value = fake_tools.arguments(tool[1], answer["content"][0]["text"], off)
        answer["content"] = [
            {"type": "tool_use", "id": f"toolu_{len(req['messages'])}", "name": tool[0], "input": value}
        ]
        answer["stop_reason"] = "tool_use"

    def _billed(self, messages: list[Any]) -> None:
        key = hashlib.sha256(json.dumps(messages).encode()).hexdigest()[:16]
        with self.lock:
            self.billed_by_prompt[key] += 1
            self.billed_text[key] = json.dumps(messages)[:20_000]

    def _stats_body(self) -> dict[str, Any]:
        with self.lock:
            acc = self.accepted_at
            return {
                "stats": dict(self.stats),
                "accepted": len(acc),
                "history": self.history_by_marker,
                "billed_by_prompt": dict(self.billed_by_prompt),
                "billed_heads": {k: t[:2000] for k, t in self.billed_text.items()},
                "first_token_at": dict(self.first_token_at),
                "accepted_span_s": (acc[-1] - acc[0]) if len(acc) > 1 else 0.0,
                "rejected_after_s": [round(t - acc[0], 3) for t in self.rejected_at] if acc else [],
            }

    def _count_tokens(self, req: dict[str, Any]) -> dict[str, Any]:
        text = str(req.get("system", "")) + "".join(
            m["content"]
            if isinstance(m.get("content"), str)
            else "".join(b.get("text", "") for b in m.get("content", []))
            for m in req.get("messages", [])
        )
        with self.lock:
            self.stats["count_tokens"] += 1
        return {"input_tokens": math.ceil(len(text) / 4 * self.plan.count_factor)}

    async def _drawn_after_latency(self, marker: str | None) -> str:
        """Draw this call's outcome from the plan, count it, and wait out the configured latency."""
        outcome = self._draw()
        with self.lock:
            self.stats["calls"] += 1
            self.stats[outcome] += 1
            if marker:
                self.history_by_marker.setdefault(marker, []).append(outcome)
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            if self.plan.latency_s:
                await asyncio.sleep(self.plan.latency_s)
        finally:
            with self.lock:
                self.inflight -= 1
        return outcome

    def _answer(self, model: str, max_tokens: int, messages: list[Any], marker: str | None) -> dict[str, Any]:
        texts = [  # each turn's text, a tool result's content counted as text
            m["content"]
            if isinstance(m.get("content"), str)
            else "".join(b.get("text") or str(b.get("content") or "") for b in m.get("content", []))
            for m in messages
        ]
        text_in = "".join(texts)
        cites = DOC_ID.findall(text_in)[:2] + ([self.plan.extra_citation] if self.plan.extra_citation else [])
        question = texts[-1].rsplit("Question:", 1)[-1].strip()[:80]  # the last user turn
        answer = f"Fake answer about: {question}" + "".join(f" [{c}]" for c in cites)
        if marker:
            with self.lock:
                self.replies_by_marker[marker] += 1
        in_tokens = max(1, len(text_in) // 4)
        out_tokens = max(1, min(max_tokens, len(answer) // 4))
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": answer}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": in_tokens, "output_tokens": out_tokens},
        }


def _stray_result(messages: list[Any]) -> str | None:
    def ids(m: dict[str, Any] | None, kind: str, key: str) -> set[str]:
        content = (m or {}).get("content")
        return {b[key] for b in content if b.get("type") == kind} if isinstance(content, list) else set()

    for i, m in enumerate(messages):
        before = messages[i - 1] if i and messages[i - 1]["role"] == "assistant" else None
        if stray := fake_tools.unanswered(ids(before, "tool_use", "id"), ids(m, "tool_result", "tool_use_id")):
            return stray
    return None


def main() -> None:
    """`python -m core.testing.fake_anthropic --port P [--latency S]`: serve in the foreground."""
    import argparse

    import uvicorn

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--api-key", default="test-key")
    p.add_argument("--rpm", type=float, help="enforce this many requests per minute (429 beyond)")
    p.add_argument("--burst", type=float, help="rate-limit bucket capacity in requests (default: rpm)")
    p.add_argument("--rates", default="{}", help='fault probabilities as JSON, e.g. \'{"500": 0.1, "400": 0.05}\'')
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout-s", type=float, default=30.0, help="how long a `timeout` fault stalls")
    p.add_argument("--stream-tps", type=float, default=0.0, help="tokens per second of a generated reply")
    p.add_argument("--stream-tokens", type=int, default=0, help="pad every reply to this many tokens")
    a = p.parse_args()
    import json as _json

    plan = FaultPlan(
        latency_s=a.latency,
        rpm=a.rpm,
        burst=a.burst,
        rates=_json.loads(a.rates),
        seed=a.seed,
        timeout_s=a.timeout_s,
        stream_tps=a.stream_tps,
        stream_tokens=a.stream_tokens,
    )
    uvicorn.run(
        FakeAnthropic(plan, api_key=a.api_key),
        host="127.0.0.1",
        port=a.port,
        log_level="warning",
        access_log=False,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
