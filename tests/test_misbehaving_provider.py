"""A misbehaving Messages API, one fault per job: every job ends, explained, within a bounded time, with
provider calls within budget, never two calls for one job at once, and never billed at a nonsense price."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from core.entrypoints.local import run_until_done
from core.models import JobRequest, JobStatus, QueueMessage
from core.testing.fake_anthropic import FakeAnthropic, FaultPlan, ServerThread
from tests.conftest import anthropic_config

BUDGET = 2
BOUND_S = 20.0

CASES = {
    # fault: (final status, words the explanation must contain)
    # accepts the request, never answers; headers at once, then nothing: the SDK's read timeout and the
    # whole-call deadline fall together here, and either may say so first
    "timeout": (JobStatus.dead_lettered, ("timed out", "cut after")),
    "stall": (JobStatus.dead_lettered, ("timed out", "cut after")),
    "trickle": (JobStatus.dead_lettered, "cut after"),  # a byte at a time: every read is in time, the call is not
    "malformed": (JobStatus.dead_lettered, "malformed"),  # truncated JSON
    "no_usage": (JobStatus.dead_lettered, "malformed"),
    "empty": (JobStatus.dead_lettered, "no text"),
    "absurd_usage": (JobStatus.dead_lettered, "impossible usage"),
    "negative_usage": (JobStatus.dead_lettered, "impossible usage"),
}


def config(url: str, **route: object) -> dict:
    # a long lease: its first heartbeat (lease_s / 3) comes long after the 1 s call deadline must cut
    cfg = anthropic_config(url, max_attempts=BUDGET, lease_s=30, in_process_wait_s=0.2)
    cfg["providers"]["fake"]["timeout_s"] = 1.0
    cfg["routing"]["default"].update(route)
    return cfg


def run_one(make_app, plan: FaultPlan, **route: object):
    fa = FakeAnthropic(plan)
    with ServerThread(fa) as srv:
        app = make_app(config(srv.url, **route))
        job, _ = app.service.submit("acme", JobRequest(prompt="marker:m one question"))
        t0 = time.monotonic()
        asyncio.run(run_until_done(app, [job.id], timeout_s=BOUND_S))
        elapsed = time.monotonic() - t0
    return app.store.get(job.id), fa, elapsed


@pytest.mark.parametrize("fault", list(CASES))
def test_each_misbehaviour_ends_explained_within_budget_and_time(make_app, fault):
    status, words = CASES[fault]
    job, fa, elapsed = run_one(make_app, FaultPlan(rates={fault: 1.0}, timeout_s=4.0, trickle_s=0.3))
    assert job.status is status, (job.status, job.error)
    assert any(w in job.error.message for w in ((words,) if isinstance(words, str) else words)), job.error.message
    assert elapsed < BOUND_S
    assert fa.stats["calls"] <= BUDGET == job.provider_calls
    assert fa.max_inflight == 1  # no redelivery ever ran a second call for the same job
    assert all(a.latency_ms < 2500 for a in job.attempts), [a.latency_ms for a in job.attempts]  # cut at ~1 s
    assert job.usage.cost_usd < 0.01  # impossible usage is never billed at its price


def test_a_reply_cut_at_max_tokens_is_served_with_its_stop_reason_or_failed_as_the_route_says(make_app):
    job, _, _ = run_one(make_app, FaultPlan(rates={"max_tokens": 1.0}))
    assert job.status is JobStatus.succeeded
    assert job.reply.stop_reason == "max_tokens"
    from core.views import JobView

    assert JobView.of(job).stop_reason == "max_tokens"
    job, fa, _ = run_one(make_app, FaultPlan(rates={"max_tokens": 1.0}), on_max_tokens="fail")
    assert job.status is JobStatus.failed
    assert "cut at max_tokens" in job.error.message
    assert fa.stats["calls"] == 1
    assert job.usage.output_tokens > 0
    assert job.usage.cost_usd > 0  # billed, not served


def test_a_cut_reply_falls_back_to_the_max_tokens_chain(make_app):
    fa = FakeAnthropic(FaultPlan(script=["max_tokens", "ok"]))
    with ServerThread(fa) as srv:
        cfg = config(srv.url, on_max_tokens="fallback", fallbacks={"max_tokens": ["bigger"]})
        cfg["models"]["bigger"] = {
            "provider": "fake",
            "model_id": "claude-sonnet-4-5",
            "input_per_mtok": 5.0,
            "output_per_mtok": 25.0,
        }
        app = make_app(cfg)
        job, _ = app.service.submit("acme", JobRequest(prompt="q"))
        asyncio.run(run_until_done(app, [job.id], timeout_s=BOUND_S))
    job = app.store.get(job.id)
    assert job.status is JobStatus.succeeded
    assert job.route.model == "bigger"
    assert [a.outcome for a in job.attempts] == ["error", "succeeded"]
    assert job.usage.cost_usd == pytest.approx(sum(a.usage.cost_usd for a in job.attempts))  # both were billed


def test_a_slow_reply_keeps_its_lease_by_heartbeat_and_a_redelivery_never_calls_again(make_app):
    fa = FakeAnthropic(FaultPlan(latency_s=2.5))
    with ServerThread(fa) as srv:
        cfg = anthropic_config(srv.url, lease_s=1.0)
        cfg["providers"]["fake"]["timeout_s"] = 10.0
        app = make_app(cfg)
        job, _ = app.service.submit("acme", JobRequest(prompt="marker:slow question"))
        message = QueueMessage(job_id=job.id, tenant=job.tenant, trace_id=job.trace_id).model_dump_json()
        # the platform redelivers while the call is in flight, long after a 1 s lease would have expired
        redelivery = threading.Timer(1.8, app.queue.send, args=(message,))
        redelivery.start()
        asyncio.run(run_until_done(app, [job.id], timeout_s=BOUND_S, concurrency=4))
        redelivery.join()  # it was sent while the call was in flight; the workers have stopped since
    job = app.store.get(job.id)
    assert job.status is JobStatus.succeeded
    assert fa.stats["calls"] == 1
    assert job.provider_calls == 1


def test_the_anthropic_client_keeps_to_the_configured_max_connections():
    """20 calls at once through a provider configured for 4 connections: the server never sees more than 4."""
    import asyncio

    from core.providers.anthropic import AnthropicProvider
    from core.providers.base import ChatRequest
    from core.testing.fake_anthropic import FakeAnthropic, FaultPlan, ServerThread

    fake = FakeAnthropic(FaultPlan(latency_s=0.2))
    with ServerThread(fake) as srv:

        async def go() -> None:
            p = AnthropicProvider(api_key="test-key", base_url=srv.url, max_connections=4)
            try:
                req = ChatRequest(model_id="claude-haiku-4-5", system="s", user="Question: q", question="q")
                await asyncio.gather(*(p.generate(req, timeout_s=10) for _ in range(20)))
            finally:
                await p.aclose()

        asyncio.run(go())
    assert fake.stats["calls"] == 20
    assert fake.max_inflight == 4


SDK_SPANS = """
import asyncio, sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from core.providers.anthropic import AnthropicProvider
from core.providers.base import ChatRequest

async def main():
    req = ChatRequest(model_id="claude-haiku-4-5", system="s", user="Question: q", question="q")
    untraced = AnthropicProvider(api_key="test-key", base_url=sys.argv[1])  # no tracer provider set yet
    exporter, provider = InMemorySpanExporter(), TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    traced = AnthropicProvider(api_key="test-key", base_url=sys.argv[1])
    for p in (untraced, traced):
        await p.generate(req, timeout_s=10)
        print(len(exporter.get_finished_spans()))
        await p.aclose()

asyncio.run(main())
"""


def test_the_sdks_call_spans_are_built_only_when_a_tracer_provider_is_set():
    """With no tracer provider the SDK's spans record nothing but cost CPU per call, so the client is built
    without them; once a distro or the app has set one, the SDK's span per call is recorded as usual."""
    import subprocess
    import sys
    from pathlib import Path

    from core.testing.fake_anthropic import FakeAnthropic, FaultPlan, ServerThread

    with ServerThread(FakeAnthropic(FaultPlan())) as srv:
        out = subprocess.run(
            [sys.executable, "-c", SDK_SPANS, srv.url],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=Path(__file__).resolve().parent.parent,
        )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "1"]


def _both_paths(url: str, request, timeout_s: float = 5.0):
    import asyncio

    from core.errors import ProviderError
    from core.providers.anthropic import AnthropicProvider

    async def one(calls: str):
        p = AnthropicProvider(api_key="test-key", base_url=url, calls=calls, sdk_spans=False)  # no SDK spans wanted
        assert (p._direct is not None) is (calls == "direct")
        try:
            return await p.generate(request, timeout_s=timeout_s)
        except ProviderError as e:
            return e
        finally:
            await p.aclose()

    return asyncio.run(one("direct")), asyncio.run(one("sdk"))


def test_a_direct_call_sends_what_the_sdk_would_send():
    """The direct path posts on the SDK client's own HTTP client: the same URL, JSON body and SDK headers
    (version, auth, user agent), and it reads the same reply, as `messages.create` on that client."""
    import json

    from core.providers.base import ChatRequest
    from core.testing.fake_anthropic import ServerThread
    from tests.conftest import Collector

    reply = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "stop_reason": "max_tokens",
        "content": [
            {"type": "text", "text": "caf\u00e9 "},
            {"type": "tool_use", "id": "t", "name": "n", "input": {}},
            {"type": "text", "text": "ok"},
        ],
        "usage": {"input_tokens": 12, "output_tokens": 3, "cache_read_input_tokens": 5},
    }
    receiver = Collector(reply=(b"application/json", json.dumps(reply).encode()))
    request = ChatRequest(
        model_id="claude-haiku-4-5",
        system="s\u00e9",
        user="ctx. Question: q",
        question="q",
        max_tokens=9,
        temperature=0.2,
        cache_prefix_chars=5,
    )
    with ServerThread(receiver) as srv:
        direct, sdk = _both_paths(srv.url + "/proxy/", request)
    assert direct == sdk
    assert direct.text == "caf\u00e9 ok"
    assert direct.cache_read_tokens == 5
    assert direct.stop_reason == "max_tokens"
    assert direct.raw_stop_reason == "max_tokens"
    assert list(receiver.bodies) == ["/proxy/v1/messages"]  # both paths posted there
    d_body, s_body = (json.loads(b) for b in receiver.bodies["/proxy/v1/messages"])
    d_headers, s_headers = receiver.headers
    assert d_body == s_body
    assert d_body["temperature"] == 0.2
    assert d_body["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}
    per_call = {
        "x-stainless-retry-count",
        "x-stainless-read-timeout",
        "x-stainless-timeout",
        "x-stainless-raw-response",
        "content-length",
    }  # the SDK's per-request telemetry
    assert {k: v for k, v in s_headers.items() if k not in per_call} == {
        k: v for k, v in d_headers.items() if k not in per_call
    }
    assert d_headers["anthropic-version"]
    assert "test-key" in (d_headers.get("x-api-key", "") + d_headers.get("authorization", ""))


def test_a_direct_call_fails_as_the_sdk_path_does():
    """A 429 with retry-after, an overloaded 529, a too-long prompt, a truncated 200, a reply with no usage and
    a refusal: each comes back from the direct path as the same `ProviderError` the SDK path gives."""
    from core.providers.base import ChatRequest
    from core.testing.fake_anthropic import FakeAnthropic, FaultPlan, ServerThread

    request = ChatRequest(model_id="claude-haiku-4-5", system="s", user="Question: q", question="q")
    for fault in ("429", "529", "400_context", "malformed", "no_usage", "refusal"):
        with ServerThread(FakeAnthropic(FaultPlan(script=[fault, fault]))) as srv:
            direct, sdk = _both_paths(srv.url, request)
        fields = ("status_code", "context_overflow", "malformed", "transport", "content_policy")
        assert type(direct) is type(sdk), fault
        assert isinstance(direct, Exception), fault
        assert {f: getattr(direct, f) for f in fields} == {f: getattr(sdk, f) for f in fields}, fault
        if fault == "429":
            assert direct.headers["retry-after"] == sdk.headers["retry-after"]
        assert str(direct).split(":")[0] == str(sdk).split(":")[0] == "anthropic", fault


def test_a_direct_call_times_out_and_reports_a_lost_connection_as_the_sdk_path_does():
    from core.providers.base import ChatRequest
    from core.testing.fake_anthropic import FakeAnthropic, FaultPlan, ServerThread

    request = ChatRequest(model_id="claude-haiku-4-5", system="s", user="Question: q", question="q")
    for fault, kind in (("timeout", "timeout"), ("reset", "connection")):
        with ServerThread(FakeAnthropic(FaultPlan(script=[fault, fault], timeout_s=8))) as srv:
            direct, sdk = _both_paths(srv.url, request, timeout_s=1)
        assert direct.transport == sdk.transport == kind, (fault, direct, sdk)
