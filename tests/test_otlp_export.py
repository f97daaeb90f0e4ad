"""The owned OTLP span exporter over real HTTP: hand-encoded spans decode with the official protobuf
classes, the SDK's environment (headers, gzip) is honoured, a 503 is retried and the queue is bounded."""

from __future__ import annotations

import gzip

import pytest

from core.observability import otlp_wire
from core.observability.otlp_export import SpanExporter
from core.testing.servers import ServerThread
from tests.conftest import Collector


def _span(error: str | None = None) -> bytes:
    attrs = {
        "gen_ai.request.model": "claude-haiku-4-5",
        "alto.attempt": 2,
        "neg": -7,
        "ok": True,
        "cost": 0.25,
        "big": 1 << 40,
    }
    return otlp_wire.span(
        bytes(range(16)),
        b"\x01" * 8,
        b"\x02" * 8,
        "chat m",
        otlp_wire.KIND_CLIENT,
        10,
        20,
        attrs,
        error,
        otlp_wire.FLAGS_LOCAL_PARENT,
    )


def test_spans_arrive_gzipped_with_env_headers_after_a_retried_503(monkeypatch):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer%20s3cret,x-team=llm")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")
    receiver = Collector(fail=1)
    with ServerThread(receiver) as srv:
        exporter = SpanExporter(f"{srv.url}/v1/traces", {"service.name": "svc", "n": 3}, "altostratus", interval_s=60)
        exporter.add(_span())
        exporter.add(_span("timed out"))
        exporter.close()
    assert len(receiver.headers) == 2  # the 503, then the same batch again
    headers, body = receiver.headers[-1], receiver.bodies["/v1/traces"][-1]
    assert headers["authorization"] == "Bearer s3cret"
    assert headers["x-team"] == "llm"
    assert headers["content-encoding"] == "gzip"
    assert headers["content-type"] == "application/x-protobuf"
    [rs] = ExportTraceServiceRequest.FromString(gzip.decompress(body)).resource_spans
    assert {a.key: a.value.WhichOneof("value") for a in rs.resource.attributes} == {
        "service.name": "string_value",
        "n": "int_value",
    }
    [ss] = rs.scope_spans
    assert ss.scope.name == "altostratus"
    ok, failed = ss.spans
    assert ok.trace_id == bytes(range(16))
    assert ok.span_id == b"\x01" * 8
    assert ok.parent_span_id == b"\x02" * 8
    assert ok.name == "chat m"
    assert ok.kind == Span.SPAN_KIND_CLIENT
    assert (ok.start_time_unix_nano, ok.end_time_unix_nano) == (10, 20)
    values = {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in ok.attributes}
    assert values == {
        "gen_ai.request.model": "claude-haiku-4-5",
        "alto.attempt": 2,
        "neg": -7,
        "ok": True,
        "cost": 0.25,
        "big": 1 << 40,
    }
    assert ok.status.code == Status.STATUS_CODE_UNSET
    assert ok.flags == 0x100
    assert failed.status.code == Status.STATUS_CODE_ERROR
    assert failed.status.message == "timed out"


def test_a_full_queue_drops_and_counts_rather_than_blocking():
    exporter = SpanExporter("http://127.0.0.1:9/v1/traces", {}, "s", max_queue=3, interval_s=60)
    for _ in range(5):
        exporter.add(_span())
    assert exporter.dropped == 2
    assert len(exporter._queue) == 3
    exporter._queue.clear()
    exporter.close()


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 1 << 35])
def test_varints_match_protobuf(n):
    from google.protobuf.internal.encoder import _VarintBytes

    assert otlp_wire.varint(n) == _VarintBytes(n)


def _points(body: bytes) -> dict:
    """An ExportMetricsServiceRequest's histogram points by metric name, attributes as a dict."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    out: dict = {}
    for rm in ExportMetricsServiceRequest.FromString(body).resource_metrics:
        for sm in rm.scope_metrics:
            assert sm.scope.name == "altostratus"
            for m in sm.metrics:
                assert m.WhichOneof("data") == "histogram"
                out[m.name] = (
                    m,
                    [
                        (({a.key: getattr(a.value, a.value.WhichOneof("value")) for a in p.attributes}), p)
                        for p in m.histogram.data_points
                    ],
                )
    return out


def test_histograms_are_aggregated_here_and_decode_as_otlp_with_exact_buckets(monkeypatch):
    from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

    from core.observability.otlp_metrics import DURATION_BOUNDS, Histogram, MetricExporter

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "x-tenant=ops")
    duration = Histogram("gen_ai.client.operation.duration", "s", "GenAI call duration.", DURATION_BOUNDS)
    ok, failed = {"gen_ai.provider.name": "anthropic"}, {"gen_ai.provider.name": "anthropic", "error.type": "transient"}
    for v in (0.005, 0.01, 0.015, 100.0):  # 0.01 sits on a bound: buckets are (low, high]
        duration.record(v, dict(ok))
    duration.record(0.3, failed)
    receiver = Collector()
    with ServerThread(receiver) as srv:
        exporter = MetricExporter(
            f"{srv.url}/v1/metrics", {"service.name": "svc"}, "altostratus", [duration], interval_s=60
        )
        exporter.flush()
        duration.record(0.02, dict(ok))
        exporter.close()
    first, second = (_points(b) for b in receiver.bodies["/v1/metrics"])
    metric, points = first["gen_ai.client.operation.duration"]
    assert (metric.unit, metric.description) == ("s", "GenAI call duration.")
    assert metric.histogram.aggregation_temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    (ok_attrs, p), (failed_attrs, q) = points
    assert ok_attrs == ok
    assert failed_attrs == failed
    assert receiver.headers[0]["x-tenant"] == "ops"
    assert list(p.explicit_bounds) == list(DURATION_BOUNDS)
    assert len(p.bucket_counts) == len(DURATION_BOUNDS) + 1
    assert p.bucket_counts[0] == 2
    assert p.bucket_counts[1] == 1
    assert p.bucket_counts[-1] == 1
    assert sum(p.bucket_counts) == 4
    assert (p.count, p.sum, p.min, p.max) == (4, 0.005 + 0.01 + 0.015 + 100.0, 0.005, 100.0)
    assert (q.count, q.min, q.max, q.bucket_counts[5]) == (1, 0.3, 0.3, 1)  # 0.16 < 0.3 <= 0.32
    assert 0 < p.start_time_unix_nano < p.time_unix_nano
    [(_, p2), _] = second["gen_ai.client.operation.duration"][1]
    assert p2.count == 5
    assert p2.bucket_counts[1] == 2
    assert p2.start_time_unix_nano == p.start_time_unix_nano


def test_delta_temporality_sends_only_what_is_new(monkeypatch):
    from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

    from core.observability.otlp_metrics import TOKEN_BOUNDS, Histogram, MetricExporter

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta")
    tokens = Histogram("gen_ai.client.token.usage", "{token}", "Tokens per call.", TOKEN_BOUNDS)
    receiver = Collector()
    with ServerThread(receiver) as srv:
        exporter = MetricExporter(f"{srv.url}/v1/metrics", {}, "altostratus", [tokens], interval_s=60)
        tokens.record(100, {"gen_ai.token.type": "input"})
        exporter.flush()
        exporter.flush()  # nothing new: no request at all
        tokens.record(5, {"gen_ai.token.type": "input"})
        exporter.close()
    first, second = (_points(b)["gen_ai.client.token.usage"] for b in receiver.bodies["/v1/metrics"])
    assert first[0].histogram.aggregation_temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
    [(_, p)], [(_, q)] = first[1], second[1]
    assert (p.count, p.sum, p.bucket_counts[4]) == (1, 100.0, 1)
    assert (q.count, q.sum, q.bucket_counts[2]) == (1, 5.0, 1)
    # each delta starts where the last collection (here the empty one) ended: the intervals tile time
    assert p.time_unix_nano <= q.start_time_unix_nano < q.time_unix_nano


def test_cached_attributes_keep_their_type():
    """True == 1 as a dict key: the cache must still tell a bool from an int (and from a string)."""
    from opentelemetry.proto.common.v1.common_pb2 import KeyValue

    encoded = [otlp_wire.attribute("k", v) for v in (True, 1, "1", 1, True)]
    decoded = [KeyValue.FromString(e[2:]) for e in encoded]  # strip field 9's tag and one-byte length
    assert [kv.value.WhichOneof("value") for kv in decoded] == [
        "bool_value",
        "int_value",
        "string_value",
        "int_value",
        "bool_value",
    ]


def test_job_ids_never_fill_the_attribute_cache():
    from core.observability import otel

    before = len(otlp_wire._STRINGS)
    for i in range(50):
        otlp_wire.attribute(otel.JOB_ID, f"j-{i:024d}")
    otlp_wire.attribute("alto.tenant", "acme-cache-test")
    assert len(otlp_wire._STRINGS) == before + 1  # the bounded dimension, not the 50 ids
