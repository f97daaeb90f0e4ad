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
    attrs = {"gen_ai.request.model": "claude-haiku-4-5", "alto.attempt": 2, "neg": -7, "ok": True, "cost": 0.25,
             "big": 1 << 40}
    return otlp_wire.span(bytes(range(16)), b"\x01" * 8, b"\x02" * 8, "chat m", otlp_wire.KIND_CLIENT, 10, 20, attrs,
                          error, otlp_wire.FLAGS_LOCAL_PARENT)


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
    assert headers["authorization"] == "Bearer s3cret" and headers["x-team"] == "llm"
    assert headers["content-encoding"] == "gzip" and headers["content-type"] == "application/x-protobuf"
    [rs] = ExportTraceServiceRequest.FromString(gzip.decompress(body)).resource_spans
    assert {a.key: a.value.WhichOneof("value") for a in rs.resource.attributes} == {"service.name": "string_value",
                                                                                    "n": "int_value"}
    [ss] = rs.scope_spans
    assert ss.scope.name == "altostratus"
    ok, failed = ss.spans
    assert ok.trace_id == bytes(range(16)) and ok.span_id == b"\x01" * 8 and ok.parent_span_id == b"\x02" * 8
    assert ok.name == "chat m" and ok.kind == Span.SPAN_KIND_CLIENT and (ok.start_time_unix_nano, ok.end_time_unix_nano) == (10, 20)
    values = {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in ok.attributes}
    assert values == {"gen_ai.request.model": "claude-haiku-4-5", "alto.attempt": 2, "neg": -7, "ok": True,
                      "cost": 0.25, "big": 1 << 40}
    assert ok.status.code == Status.STATUS_CODE_UNSET and ok.flags == 0x100
    assert failed.status.code == Status.STATUS_CODE_ERROR and failed.status.message == "timed out"


def test_a_full_queue_drops_and_counts_rather_than_blocking():
    exporter = SpanExporter("http://127.0.0.1:9/v1/traces", {}, "s", max_queue=3, interval_s=60)
    for _ in range(5):
        exporter.add(_span())
    assert exporter.dropped == 2 and len(exporter._queue) == 3
    exporter._queue.clear()
    exporter.close()


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 1 << 35])
def test_varints_match_protobuf(n):
    from google.protobuf.internal.encoder import _VarintBytes

    assert otlp_wire.varint(n) == _VarintBytes(n)
