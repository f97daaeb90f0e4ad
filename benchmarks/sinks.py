"""What each metrics sink costs per call, in this process, on one real finished job.

One job runs through the local runtime (offline provider); then each sink method is called N times on its
records and the mean is printed in µs: Prometheus, OpenTelemetry through a tracer and the SDK's meter (the
path for providers someone else configured: `sdk_*` metrics, `via_tracer` spans), OpenTelemetry with its own
OTLP pipeline (`otel_*`: histograms aggregated by `otlp_metrics`, spans encoded by `otlp_wire` and queued on
its exporter, the encoding included; the receiver drops what it gets), and for comparison the SDK's OTLP
protobuf encoding of the same job's spans, which an SDK batch processor's thread would pay. One JSON line.

    python benchmarks/sinks.py [--n 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _mean_us(n: int, f: Callable[[], object]) -> float:
    t = time.perf_counter()
    for _ in range(n):
        f()
    return round((time.perf_counter() - t) / n * 1e6, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20000)
    a = p.parse_args()
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from benchmarks.throughput import _start_receiver
    from core.bootstrap import bootstrap
    from core.config.worker import Settings
    from core.entrypoints.local import run_until_done
    from core.models import JobRequest
    from core.observability.metrics import attempt_record, job_record
    from core.observability.otel import OtelSink
    from core.observability.prometheus import PrometheusSink, Registry

    with tempfile.TemporaryDirectory() as d:
        app = bootstrap(Settings.model_validate({"data_dir": d, "logging": {"level": "WARNING"}}))
        job, _ = app.service.submit("bench", JobRequest(prompt="a question"))
        asyncio.run(run_until_done(app, [job.id], timeout_s=30))
        job = app.store.get(job.id)
    attempt = job.attempts[0]
    ar, jr = attempt_record(job, attempt, model_id="m"), job_record(job)
    prom = PrometheusSink(Registry())
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meters = MeterProvider(metric_readers=[InMemoryMetricReader()])
    via_tracer = OtelSink(provider_types={}, model_ids={}, tracer_provider=tracer_provider, meter_provider=meters)
    via_tracer.job(jr, job)
    spans = exporter.get_finished_spans()
    receiver = _start_receiver()
    try:
        import os

        owned = OtelSink(provider_types={}, model_ids={}, endpoint=os.environ["ALTO_BENCH_OTLP"])
        exporter.clear()
        line = {
            "benchmark": "sinks",
            "n": a.n,
            "prometheus_attempt_us": _mean_us(a.n, lambda: prom.attempt(ar, attempt, job)),
            "prometheus_job_us": _mean_us(a.n, lambda: prom.job(jr, job)),
            "prometheus_picked_us": _mean_us(a.n, lambda: prom.picked("bench", "-", 0.1)),
            "otel_attempt_metrics_us": _mean_us(a.n, lambda: owned.attempt(ar, attempt, job)),
            "otel_picked_metric_us": _mean_us(a.n, lambda: owned.picked("bench", "-", 0.1)),
            "sdk_attempt_metrics_us": _mean_us(a.n, lambda: via_tracer.attempt(ar, attempt, job)),
            "sdk_picked_metric_us": _mean_us(a.n, lambda: via_tracer.picked("bench", "-", 0.1)),
            "otel_job_spans_via_tracer_us": _mean_us(a.n // 4, lambda: (via_tracer.job(jr, job), exporter.clear())),
            "otel_job_spans_owned_exporter_us": _mean_us(a.n // 4, lambda: owned.job(jr, job)),
            "sdk_otlp_encode_job_spans_us": _mean_us(a.n // 4, lambda: encode_spans(spans).SerializeToString()),
            "spans_per_job": len(spans),
        }
        owned.close()
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)
    print(json.dumps(line))


if __name__ == "__main__":
    main()
