"""OpenTelemetry: a span per job and one per attempt (GenAI semantic conventions), and GenAI metrics.

Spans are made when the job reaches its terminal status, from what the job record holds, with their
real start and end times: the job span (`alto.job`) runs from submit to the terminal write, in the trace
the submit began or continued (its W3C `traceparent`: the job keeps the trace id and the caller's span
id, so the worker's spans join the caller's trace across the queue), and each attempt is a CLIENT
child span named `chat {model}` carrying `gen_ai.*` attributes. Making them at the end means a job
handed back and redelivered three times is still one span with three children, whichever workers ran
them. Metrics follow the GenAI client conventions (`gen_ai.client.token.usage`,
`gen_ai.client.operation.duration`). With `observability.otel.endpoint` this module exports OTLP/HTTP
itself (Cloud Monitoring and Application Insights both ingest OTLP): its finished spans are encoded by
`otlp_wire` and posted by the exporter it owns (`otlp_export`), its histograms aggregated and posted by
`otlp_metrics`; without it, spans and metrics go through the process's global providers as the
platform's distro or `opentelemetry-instrument` configured them (their samplers and readers apply).
"""

from __future__ import annotations

import random
from typing import Any, NamedTuple

from core.models import Attempt, Job
from core.observability import otlp_wire
from core.observability.metrics import AttemptRecord, JobRecord
from core.observability.otlp_metrics import DURATION_BOUNDS, QUEUE_AGE_BOUNDS, TOKEN_BOUNDS

# GenAI semantic-convention names (checked against opentelemetry-semantic-conventions in the tests)
OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
CACHE_READ = "gen_ai.usage.cache_read.input_tokens"
CACHE_WRITE = "gen_ai.usage.cache_creation.input_tokens"
TOKEN_TYPE = "gen_ai.token.type"
ERROR_TYPE = "error.type"
TOKEN_USAGE = "gen_ai.client.token.usage"
OPERATION_DURATION = "gen_ai.client.operation.duration"
JOB_ID = "alto.job.id"
otlp_wire.never_cache(JOB_ID)
# our provider types → the conventions' well-known gen_ai.provider.name values
PROVIDER_NAMES = {
    "anthropic": "anthropic",
    "openai_compatible": "openai",
    "bedrock": "aws.bedrock",
    "offline": "altostratus.offline",
}


# the sink's histograms (token usage, call duration, queue age): name, unit, description, bucket bounds
_HISTOGRAMS = (
    (TOKEN_USAGE, "{token}", "Tokens per call.", TOKEN_BOUNDS),
    (OPERATION_DURATION, "s", "GenAI call duration.", DURATION_BOUNDS),
    ("alto.queue.age", "s", "Queued job's wait for a worker.", QUEUE_AGE_BOUNDS),
)


class _Span(NamedTuple):
    """A finished span as this module describes it, before either path turns it into an SDK span."""

    name: str
    client: bool  # SpanKind.CLIENT (a provider call) or INTERNAL (the job)
    start: float
    end: float
    attrs: dict[str, Any]
    error: str | None  # the ERROR status description, None when the span succeeded


def _ns(t: float) -> int:
    return int(t * 1_000_000_000)


def _parent_span_id(job: Job) -> int:
    """The job span's parent: the caller's span when it sent a `traceparent`, else a span id derived from
    the trace id (the submit itself, which records no span of its own)."""
    return int(job.parent_span_id, 16) if job.parent_span_id else (int(job.trace_id[16:], 16) or 1)


def _span_id() -> bytes:
    return (random.getrandbits(64) or 1).to_bytes(8, "big")


class OtelSink:
    def __init__(
        self,
        *,
        provider_types: dict[str, str],
        model_ids: dict[str, str],
        endpoint: str | None = None,
        service_name: str = "altostratus",
        sample_ratio: float = 1.0,
        tracer_provider: Any = None,
        meter_provider: Any = None,
    ) -> None:
        from opentelemetry import metrics, trace

        self._trace = trace
        self.provider_types = provider_types  # provider name in config -> its type
        self.model_ids = model_ids  # model name in config -> the provider's model id
        self.sample_below = int(sample_ratio * (1 << 56))  # a trace is sampled when its low 56 bits fall below
        self._spans: Any = None  # the span exporter this sink owns (an endpoint is configured), if any
        self._metrics: Any = None  # and its metric exporter
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("altostratus")
        if endpoint is not None and tracer_provider is None:
            self._own_exporters(endpoint.rstrip("/"), service_name)
        else:
            meter = (meter_provider or metrics.get_meter_provider()).get_meter("altostratus")
            self.token_usage, self.duration, self.queue_age = (
                meter.create_histogram(name, unit=unit, description=text, explicit_bucket_boundaries_advisory=bounds)
                for name, unit, text, bounds in _HISTOGRAMS
            )

    def _own_exporters(self, endpoint: str, service_name: str) -> None:
        """Spans and metrics encoded here and posted by exporters this sink owns (see otlp_wire)."""
        from opentelemetry.sdk.resources import Resource

        from core.observability.otlp_export import SpanExporter
        from core.observability.otlp_metrics import Histogram, MetricExporter

        resource = dict(Resource.create({"service.name": service_name}).attributes)  # OTEL_RESOURCE_ATTRIBUTES apply
        self.token_usage, self.duration, self.queue_age = (Histogram(*spec) for spec in _HISTOGRAMS)
        self._spans = SpanExporter(f"{endpoint}/v1/traces", resource, "altostratus")
        self._metrics = MetricExporter(
            f"{endpoint}/v1/metrics", resource, "altostratus", [self.duration, self.token_usage, self.queue_age]
        )

    def _provider(self, name: str) -> str:
        return PROVIDER_NAMES.get(self.provider_types.get(name, ""), name)

    def attempt(self, a: AttemptRecord, attempt: Attempt, job: Job) -> None:
        attrs = {OPERATION: "chat", PROVIDER: self._provider(a.provider), REQUEST_MODEL: a.model_id}
        if a.outcome != "succeeded":
            attrs[ERROR_TYPE] = a.error_class
        self.duration.record(a.latency_s, attrs)
        for kind, n in (("input", a.input_tokens), ("output", a.output_tokens)):
            if n:
                self.token_usage.record(n, {**attrs, TOKEN_TYPE: kind})

    def job(self, j: JobRecord, job: Job) -> None:
        if int(job.trace_id[-14:], 16) >= self.sample_below:
            return  # not sampled: the same decision for this trace in every process
        end = job.finished_at or job.updated_at
        root = _Span(
            "alto.job",
            False,
            job.created_at,
            end,
            {
                JOB_ID: job.id,
                "alto.tenant": j.tenant,
                "alto.task": j.task,
                "alto.job.status": j.status,
                "alto.job.attempts": j.attempts,
                "alto.cache_hit": j.cache_hit,
                REQUEST_MODEL: self.model_ids.get(j.model, j.model),
            },
            None if j.status == "succeeded" else j.status,
        )
        if root.error is not None:
            root.attrs[ERROR_TYPE] = job.error.error_class.value if job.error else j.status
        children = [self._attempt_span(a, end) for a in job.attempts]
        if self._spans is not None:
            self._encoded(job, root, children)
        else:
            self._through_tracer(job, root, children)

    def _attempt_span(self, attempt: Attempt, job_end: float) -> _Span:
        model_id = self.model_ids.get(attempt.model or "", attempt.model or "")
        attrs: dict[str, Any] = {
            OPERATION: "chat",
            PROVIDER: self._provider(attempt.provider or ""),
            REQUEST_MODEL: model_id,
            "alto.attempt": attempt.number,
        }
        if attempt.usage is not None:
            attrs.update(
                {
                    RESPONSE_MODEL: model_id,
                    INPUT_TOKENS: attempt.usage.input_tokens,
                    OUTPUT_TOKENS: attempt.usage.output_tokens,
                    CACHE_READ: attempt.usage.cache_read_tokens,
                    CACHE_WRITE: attempt.usage.cache_write_tokens,
                    "alto.cost_usd": attempt.usage.cost_usd,
                }
            )
        error = None
        if attempt.outcome != "succeeded":
            attrs[ERROR_TYPE] = attempt.error_class.value if attempt.error_class else attempt.outcome
            error = (attempt.error or attempt.outcome or "error")[:200]
        return _Span(f"chat {model_id}", True, attempt.started_at, attempt.finished_at or job_end, attrs, error)

    def _through_tracer(self, job: Job, root: _Span, children: list[_Span]) -> None:
        """Spans through the tracer of a provider someone else configured (its sampler and processors apply)."""
        trace = self._trace
        parent = trace.set_span_in_context(trace.NonRecordingSpan(self._parent(job)))
        for spec in [root, *children]:
            span = self.tracer.start_span(
                spec.name,
                context=parent,
                start_time=_ns(spec.start),
                attributes=spec.attrs,
                kind=trace.SpanKind.CLIENT if spec.client else trace.SpanKind.INTERNAL,
            )
            if spec.error is not None:
                span.set_status(trace.Status(trace.StatusCode.ERROR, spec.error))
            span.end(end_time=_ns(spec.end))
            if spec is root:
                parent = trace.set_span_in_context(span)

    def _encoded(self, job: Job, root: _Span, children: list[_Span]) -> None:
        """Spans encoded here and queued on the exporter this sink owns. They are finished when made, from
        values this module typed, so the SDK's live-span machinery and its per-message encoder would only
        repeat what is decided (benchmarks/sinks.py measures both ways)."""
        trace_id = bytes.fromhex(job.trace_id)
        parent = _parent_span_id(job).to_bytes(8, "big")
        root_id = _span_id()
        self._spans.add(
            otlp_wire.span(
                trace_id,
                root_id,
                parent,
                root.name,
                otlp_wire.KIND_INTERNAL,
                _ns(root.start),
                _ns(root.end),
                root.attrs,
                root.error,
                otlp_wire.FLAGS_REMOTE_PARENT,
            )
        )
        for c in children:
            self._spans.add(
                otlp_wire.span(
                    trace_id,
                    _span_id(),
                    root_id,
                    c.name,
                    otlp_wire.KIND_CLIENT,
                    _ns(c.start),
                    _ns(c.end),
                    c.attrs,
                    c.error,
                    otlp_wire.FLAGS_LOCAL_PARENT,
                )
            )

    def _parent(self, job: Job) -> Any:
        """The submit's trace as a remote parent, for the tracer path."""
        trace = self._trace
        return trace.SpanContext(
            int(job.trace_id, 16),
            _parent_span_id(job),
            is_remote=True,
            trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
        )

    def picked(self, tenant: str, task: str, queue_age_s: float) -> None:
        self.queue_age.record(queue_age_s, {"alto.tenant": tenant, "alto.task": task})

    def deferred(self, tenant: str, task: str, model: str) -> None:
        return None

    def finding(self, tenant: str, task: str, rule: str, action: str) -> None:
        return None  # counted by the Prometheus and EMF sinks; OTel carries the job's spans

    def flush(self) -> None:
        """Export what is buffered (a Lambda or Cloud Function may be frozen right after the invocation)."""
        if self._spans is not None:
            self._spans.flush()
        else:
            provider = self.tracer_provider or self._trace.get_tracer_provider()
            if hasattr(provider, "force_flush"):
                provider.force_flush(timeout_millis=5000)
        if self._metrics is not None:
            self._metrics.flush()
        elif self.meter_provider is not None and hasattr(self.meter_provider, "force_flush"):
            self.meter_provider.force_flush(timeout_millis=5000)

    def close(self) -> None:
        """Flush and stop the exporters this sink was given or made; globals are left alone."""
        exporters = [e for e in (self._spans, self._metrics) if e is not None]
        if not exporters:
            self.flush()
        for exporter in exporters:
            exporter.close()  # each sends what it holds first
        for owned in (self.tracer_provider, self.meter_provider):
            if owned is not None and hasattr(owned, "shutdown"):
                owned.shutdown()
