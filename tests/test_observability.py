"""Observability through public entry points: `/metrics` on the local service over real HTTP, GenAI
spans in an in-memory OpenTelemetry exporter continuing the submit's traceparent, EMF lines that
parse as EMF, and the opt-in audit log in the blob store (redacted, never in the logs)."""

from __future__ import annotations

import asyncio
import json
import logging
import re

import httpx
import pytest

from core.entrypoints.local import run_until_done
from core.models import JobRequest
from core.observability import otel
from core.testing.fake_anthropic import FakeAnthropic, FaultPlan, ServerThread
from tests.conftest import Collector, anthropic_config, wait_terminal

H = {"Authorization": "Bearer acme-key"}
SERIES = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    text = httpx.get(f"{url}/metrics").text
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        m = SERIES.match(line)
        assert m, f"not Prometheus text format: {line!r}"
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m["labels"] or ""))
        out[(m["name"], labels)] = float(m["value"])
    return out


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v - before.get(k, 0.0) for k, v in after.items() if k[0] == name and want <= k[1])


def run(client: httpx.Client, prompt: str, headers: dict[str, str] = H) -> dict:
    r = client.post("/v1/jobs", json={"prompt": prompt}, headers=headers)
    assert r.status_code == 202, r.text
    return wait_terminal(client, r.json()["status_url"], headers)


def test_metrics_endpoint_counts_a_known_workload_exactly(live):
    fake = FakeAnthropic(FaultPlan(script=["500", "ok", "ok", "ok", "400"]))
    with ServerThread(fake) as srv:
        _app, url = live(anthropic_config(srv.url, in_process_wait_s=5))
        before = scrape(url)
        with httpx.Client(base_url=url) as c:
            views = [run(c, f"question {i}") for i in range(4)]  # one at a time: the script's order holds
        after = scrape(url)
    assert [v["status"] for v in views] == ["succeeded", "succeeded", "succeeded", "failed"]
    job = {"tenant": "acme", "task": "-", "model": "fake-sonnet"}
    assert delta(before, after, "alto_jobs_total", **job, status="succeeded") == 3
    assert delta(before, after, "alto_jobs_total", **job, status="failed") == 1
    assert delta(before, after, "alto_attempts_total", **job, outcome="succeeded", error_class="none") == 3
    assert delta(before, after, "alto_attempts_total", **job, outcome="error", error_class="transient") == 1
    assert delta(before, after, "alto_attempts_total", **job, outcome="error", error_class="permanent") == 1
    assert delta(before, after, "alto_job_attempts_total", **job) == 5
    assert delta(before, after, "alto_tokens_total", **job, type="input") == sum(
        v["usage"]["input_tokens"] for v in views
    )
    assert delta(before, after, "alto_tokens_total", **job, type="output") == sum(
        v["usage"]["output_tokens"] for v in views
    )
    assert delta(before, after, "alto_cost_usd_total", **job) == pytest.approx(
        sum(v["usage"]["cost_usd"] for v in views)
    )
    assert delta(before, after, "alto_job_duration_seconds_count", **job) == 4
    assert delta(before, after, "alto_queue_age_seconds_count", tenant="acme", task="-") == 4


def test_histogram_buckets_are_cumulative_with_le_bounds_inclusive():
    from core.observability.prometheus import Registry

    r = Registry()
    for v in (0.003, 0.05, 0.2, 500.0):
        r.observe("alto_x_seconds", (("model", "m"),), v)
    lines = dict(line.rsplit(" ", 1) for line in r.text().splitlines() if not line.startswith("#"))
    assert [
        lines[f'alto_x_seconds_bucket{{model="m",le="{le}"}}'] for le in ("0.005", "0.05", "0.25", "300", "+Inf")
    ] == ["1", "2", "3", "3", "4"]
    assert lines['alto_x_seconds_count{model="m"}'] == "4"
    assert float(lines['alto_x_seconds_sum{model="m"}']) == 500.253


def test_a_job_span_with_one_genai_child_per_attempt_continues_the_submits_trace(live, otel_memory):
    exporter, reader = otel_memory
    exporter.clear()
    trace_id, caller = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    fake = FakeAnthropic(FaultPlan(script=["500", "ok"]))
    with ServerThread(fake) as srv:
        cfg = {**anthropic_config(srv.url, in_process_wait_s=5), "observability": {"otel": {"enabled": True}}}
        _app, url = live(cfg)
        with httpx.Client(base_url=url) as c:
            view = run(c, "question traced", {**H, "traceparent": f"00-{trace_id}-{caller}-01"})
    assert view["status"] == "succeeded"
    assert view["trace_id"] == trace_id
    spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == int(trace_id, 16)]
    [job] = [s for s in spans if s.name == "alto.job"]
    assert job.parent.span_id == int(caller, 16)
    assert job.parent.is_remote  # across the queue, from the submit
    children = sorted(
        (s for s in spans if s.parent is not None and s.parent.span_id == job.context.span_id),
        key=lambda s: s.attributes["alto.attempt"],
    )
    assert [s.name for s in children] == ["chat claude-haiku-4-5"] * 2
    failed, ok = children
    for s in children:
        assert s.kind.name == "CLIENT"
        assert s.attributes[otel.OPERATION] == "chat"
        assert s.attributes[otel.PROVIDER] == "anthropic"
        assert s.attributes[otel.REQUEST_MODEL] == "claude-haiku-4-5"
        assert job.start_time <= s.start_time <= s.end_time <= job.end_time
    assert failed.attributes[otel.ERROR_TYPE] == "transient"
    assert ok.attributes[otel.INPUT_TOKENS] == view["usage"]["input_tokens"]
    assert ok.attributes[otel.OUTPUT_TOKENS] == view["usage"]["output_tokens"]
    assert ok.attributes[otel.CACHE_READ] == 0
    assert otel.ERROR_TYPE not in ok.attributes
    # one span per call: with our sink on, the SDK's own call spans (a second trace per call) are off
    assert not [s for s in exporter.get_finished_spans() if s.instrumentation_scope.name == "com.anthropic.sdk.python"]
    names = {m.name for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert {otel.TOKEN_USAGE, otel.OPERATION_DURATION} <= names


def test_genai_attribute_names_are_the_current_semantic_conventions():
    from opentelemetry.semconv._incubating.attributes import error_attributes
    from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as g
    from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as m

    assert (otel.OPERATION, otel.PROVIDER, otel.REQUEST_MODEL, otel.RESPONSE_MODEL) == (
        g.GEN_AI_OPERATION_NAME,
        g.GEN_AI_PROVIDER_NAME,
        g.GEN_AI_REQUEST_MODEL,
        g.GEN_AI_RESPONSE_MODEL,
    )
    assert (otel.INPUT_TOKENS, otel.OUTPUT_TOKENS, otel.CACHE_READ, otel.CACHE_WRITE, otel.TOKEN_TYPE) == (
        g.GEN_AI_USAGE_INPUT_TOKENS,
        g.GEN_AI_USAGE_OUTPUT_TOKENS,
        g.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
        g.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
        g.GEN_AI_TOKEN_TYPE,
    )
    assert otel.ERROR_TYPE == error_attributes.ERROR_TYPE
    assert (otel.TOKEN_USAGE, otel.OPERATION_DURATION) == (
        m.GEN_AI_CLIENT_TOKEN_USAGE,
        m.GEN_AI_CLIENT_OPERATION_DURATION,
    )
    known = {v.value for v in g.GenAiProviderNameValues}
    assert {otel.PROVIDER_NAMES[t] for t in ("anthropic", "openai_compatible", "bedrock")} <= known


def emf_records(text: str) -> list[dict]:
    """Every EMF line in `text`, checked against the format's rules."""
    out = []
    for line in text.splitlines():
        if '"_aws"' not in line:
            continue
        rec = json.loads(line)
        meta = rec["_aws"]
        assert isinstance(meta["Timestamp"], int)
        assert meta["Timestamp"] > 1_600_000_000_000
        for directive in meta["CloudWatchMetrics"]:
            assert directive["Namespace"]
            assert len(directive["Metrics"]) <= 100
            for dims in directive["Dimensions"]:
                assert 1 <= len(dims) <= 30, dims
                assert all(isinstance(rec[d], str) and rec[d] for d in dims), dims
            for metric in directive["Metrics"]:
                assert isinstance(rec[metric["Name"]], (int, float)), metric
                assert metric["Unit"] in ("Count", "Milliseconds", "None")
        out.append(rec)
    return out


def test_emf_lines_parse_and_declare_the_job_and_attempt_metrics(make_app, fake_anthropic, capsys):
    from tests.test_pipeline_governance import submit_and_run

    _, url = fake_anthropic
    app = make_app({**anthropic_config(url), "observability": {"emf": {"enabled": True, "namespace": "AltoTest"}}})
    job = submit_and_run(app)
    records = emf_records(capsys.readouterr().out)
    by = {r["Event"]: r for r in records}
    assert set(by) == {"picked", "attempt", "job"}
    assert by["job"]["Status"] == "succeeded"
    assert by["job"]["Jobs"] == 1
    assert by["job"]["JobAttempts"] == 1
    assert by["attempt"]["InputTokens"] == job.usage.input_tokens
    assert by["attempt"]["ErrorClass"] == "none"
    assert all(d["Namespace"] == "AltoTest" for r in records for d in r["_aws"]["CloudWatchMetrics"])


def test_audit_log_is_opt_in_redacted_and_never_in_the_ordinary_logs(make_app, fake_anthropic, caplog):
    from core.entrypoints.local import run_until_done
    from core.models import JobRequest

    _, url = fake_anthropic
    plain = make_app(anthropic_config(url))
    assert plain.service.aftermath.audit_log is None  # off unless configured
    app = make_app({**anthropic_config(url), "observability": {"audit": {"enabled": True, "retention_days": 30}}})
    prompt = "Refund for bob@example.com, card 4111 1111 1111 1111?"
    caplog.set_level(logging.DEBUG, logger="altostratus")
    job, _ = app.service.submit("acme", JobRequest(prompt=prompt))
    import asyncio

    asyncio.run(run_until_done(app, [job.id]))
    keys = app.blobs.list("audit/")
    assert keys == [f"audit/retention=30d/acme/{keys[0].split('/')[3]}/{job.id}.jsonl"]
    [entry] = [json.loads(line) for line in app.blobs.get(keys[0]).decode().splitlines()]
    assert "bob@example.com" not in json.dumps(entry)
    assert "4111" not in json.dumps(entry)
    assert "[email]" in entry["prompt"]["user"]
    assert "[card]" in entry["prompt"]["user"]
    assert entry["prompt"]["system"]
    assert entry["output"].startswith("Fake answer")
    assert entry["model_id"] == "claude-haiku-4-5"
    assert entry["template"] == "answer-with-citations@1"
    assert entry["decisions"]["attempts"] == [
        {"number": 1, "model": "fake-sonnet", "outcome": "succeeded", "error_class": None}
    ]
    assert entry["decisions"]["guardrail"] == "passed"
    assert entry["decisions"]["route_reason"]
    assert "Refund for" not in caplog.text  # the prompt never reaches the ordinary logs


def test_spans_and_genai_metrics_reach_an_otlp_endpoint(make_app):
    """With an endpoint the sink owns its pipeline and hands finished spans straight to its batch
    processor: the protobuf the collector receives must still be the same tree, kinds and statuses."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

    collector = Collector()
    trace_id, caller = "5bf92f3577b34da6a3ce929d0e0e4737", "10f067aa0ba902b8"
    with ServerThread(FakeAnthropic(FaultPlan(script=["500", "ok"]))) as srv, ServerThread(collector) as otlp:
        app = make_app(
            {
                **anthropic_config(srv.url, in_process_wait_s=5),
                "observability": {"otel": {"enabled": True, "endpoint": otlp.url, "service_name": "alto-otlp-test"}},
            }
        )
        job, _ = app.service.submit(
            "acme", JobRequest(prompt="traced over otlp"), trace_id=trace_id, parent_span_id=caller
        )
        asyncio.run(run_until_done(app, [job.id], timeout_s=20))
        job = app.store.get(job.id)
        from core.observability.wiring import close_otel

        close_otel()  # flushes what is buffered, then stops the exporters before the collector goes away
    spans = []
    for body in collector.bodies["/v1/traces"]:
        req = ExportTraceServiceRequest.FromString(body)
        for rs in req.resource_spans:
            assert any(
                a.key == "service.name" and a.value.string_value == "alto-otlp-test" for a in rs.resource.attributes
            )
            spans += [s for ss in rs.scope_spans for s in ss.spans if ss.scope.name == "altostratus"]
    spans = [s for s in spans if s.trace_id.hex() == trace_id]
    [root] = [s for s in spans if s.name == "alto.job"]
    assert root.parent_span_id.hex() == caller
    assert root.kind == Span.SPAN_KIND_INTERNAL
    children = sorted((s for s in spans if s.parent_span_id == root.span_id), key=lambda s: attrs(s)["alto.attempt"])
    assert [s.name for s in children] == ["chat claude-haiku-4-5"] * 2
    assert len(spans) == 3
    failed, ok = children
    assert all(
        s.kind == Span.SPAN_KIND_CLIENT
        and root.start_time_unix_nano <= s.start_time_unix_nano <= s.end_time_unix_nano <= root.end_time_unix_nano
        for s in children
    )
    assert failed.status.code == Status.STATUS_CODE_ERROR
    assert attrs(failed)[otel.ERROR_TYPE] == "transient"
    assert ok.status.code == Status.STATUS_CODE_UNSET
    assert otel.ERROR_TYPE not in attrs(ok)
    assert attrs(ok)[otel.INPUT_TOKENS] == job.usage.input_tokens
    assert attrs(ok)[otel.PROVIDER] == "anthropic"
    assert attrs(root)["alto.job.id"] == job.id
    assert attrs(root)["alto.job.attempts"] == 2
    body = collector.bodies["/v1/metrics"][-1]  # cumulative: the last export holds the whole run
    metrics = {
        m.name: m
        for rm in ExportMetricsServiceRequest.FromString(body).resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    assert {otel.TOKEN_USAGE, otel.OPERATION_DURATION, "alto.queue.age"} <= set(metrics)
    calls = {
        a.value.string_value if a.key == otel.ERROR_TYPE else "ok": p.count
        for p in metrics[otel.OPERATION_DURATION].histogram.data_points
        for a in p.attributes
        if a.key == otel.ERROR_TYPE or len(p.attributes) == 3
    }
    assert calls == {"transient": 1, "ok": 1}  # the 500, then the answer


def attrs(span) -> dict:
    """An OTLP protobuf span's attributes as plain values."""
    return {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in span.attributes}


def test_sampled_out_traces_export_no_spans_but_still_count(make_app, fake_anthropic, otel_memory):
    from tests.test_pipeline_governance import submit_and_run

    exporter, reader = otel_memory
    exporter.clear()
    _, url = fake_anthropic
    app = make_app({**anthropic_config(url), "observability": {"otel": {"enabled": True, "sample_ratio": 0.0}}})
    job = submit_and_run(app)

    def calls() -> int:
        return sum(
            p.count
            for rm in reader.get_metrics_data().resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == otel.OPERATION_DURATION
            for p in m.data.data_points
        )

    before = calls()
    job2 = submit_and_run(app)
    assert job.status.value == job2.status.value == "succeeded"
    assert [
        s
        for s in exporter.get_finished_spans()
        if s.context.trace_id in (int(job.trace_id, 16), int(job2.trace_id, 16))
    ] == []
    assert calls() == before + 1  # the metrics still saw the call
