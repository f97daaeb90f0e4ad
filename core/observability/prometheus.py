"""Prometheus text exposition for `GET /metrics` on `alto serve`: counters and histograms in process.

No client library: the text format (version 0.0.4) is a few lines per series, and the registry is a
dict under a lock (the sink is fed from the event loop and the storage thread). One registry per
process, shared by every worker loop `alto serve` runs; a workers-only process has no HTTP server, so
scrape the process that serves the API (or run workers inside it).
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Iterable

from core.models import Attempt, Job
from core.observability.metrics import AttemptRecord, JobRecord

SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
Labels = tuple[tuple[str, str], ...]


class Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = {}
        self._histograms: dict[str, dict[Labels, list[float]]] = {}  # per-bucket counts..., count, sum
        self._help: dict[str, tuple[str, str]] = {}  # name -> (type, help)

    def describe(self, name: str, kind: str, text: str) -> None:
        self._help[name] = (kind, text)

    def inc(self, name: str, key: Labels, by: float = 1.0) -> None:
        """Add to a counter; `key` is its labels as (name, value) pairs sorted by name (see `PrometheusSink`)."""
        self.record(((name, key, by),), ())

    def observe(self, name: str, key: Labels, value: float) -> None:
        """One histogram sample: its own bucket only; `text` makes the buckets cumulative when scraped."""
        self.record((), ((name, key, value),))

    def record(self, counts: Iterable[tuple[str, Labels, float]], samples: Iterable[tuple[str, Labels, float]]) -> None:
        """Several counter adds and histogram samples under one taking of the lock (a job's records are a
        dozen of them)."""
        with self._lock:
            for name, key, by in counts:
                series = self._counters.get(name)
                if series is None:
                    series = self._counters[name] = {}
                series[key] = series.get(key, 0.0) + by
            for name, key, value in samples:
                series_h = self._histograms.get(name)
                if series_h is None:
                    series_h = self._histograms[name] = {}
                row = series_h.get(key)
                if row is None:
                    row = series_h[key] = [0.0] * (len(SECONDS) + 3)
                # the first bound >= value (le semantics); len(SECONDS): only +Inf
                row[bisect_left(SECONDS, value)] += 1
                row[-2] += 1
                row[-1] += value

    def text(self) -> str:
        with self._lock:
            counters = {n: dict(s) for n, s in self._counters.items()}
            histograms = {n: {k: list(v) for k, v in s.items()} for n, s in self._histograms.items()}
        out: list[str] = []
        for name in sorted(set(counters) | set(histograms)):
            kind, text = self._help.get(name, ("counter" if name in counters else "histogram", name))
            out += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            for labels, value in sorted(counters.get(name, {}).items()):
                out.append(f"{name}{_labels(labels)} {_num(value)}")
            for labels, row in sorted(histograms.get(name, {}).items()):
                below = 0.0
                for bound, n in zip(SECONDS, row, strict=False):
                    below += n
                    out.append(f"{name}_bucket{_labels((*labels, ('le', _num(bound))))} {_num(below)}")
                out.append(f"{name}_bucket{_labels((*labels, ('le', '+Inf')))} {_num(row[-2])}")
                out.append(f"{name}_count{_labels(labels)} {_num(row[-2])}")
                out.append(f"{name}_sum{_labels(labels)} {_num(row[-1])}")
        return "\n".join(out) + "\n"


def _labels(labels: Iterable[tuple[str, str]]) -> str:
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return "{" + body + "}" if body else ""


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return str(int(v)) if float(v).is_integer() else repr(float(v))


SERIES = (
    ("alto_jobs_total", "counter", "Jobs that reached a terminal status."),
    ("alto_job_duration_seconds", "histogram", "Submit to terminal status, per job."),
    ("alto_job_attempts_total", "counter", "Provider attempts of terminal jobs."),
    ("alto_cache_hits_total", "counter", "Jobs answered from the response cache."),
    ("alto_attempts_total", "counter", "Provider calls by outcome and error class."),
    ("alto_attempt_duration_seconds", "histogram", "Provider call latency."),
    ("alto_time_to_first_token_seconds", "histogram", "Streamed calls: request to first token."),
    ("alto_tokens_total", "counter", "Tokens billed, by type."),
    ("alto_cost_usd_total", "counter", "Cost billed, USD."),
    ("alto_fallbacks_total", "counter", "Attempts sent to a fallback model."),
    ("alto_queue_age_seconds", "histogram", "How long a queued job waited before a worker picked it up."),
    ("alto_deferrals_total", "counter", "Deliveries deferred (rate limit, circuit, slot, budget)."),
    ("alto_safety_findings_total", "counter", "Safety policy findings, by rule and action (block, redact, flag)."),
)


class _AttemptKeys:
    """The label tuples of one attempt's series, in name order, for one set of its dimensions."""

    __slots__ = ("attempts", "base", "duration", "tokens", "ttft")

    def __init__(self, a: AttemptRecord) -> None:
        self.base: Labels = (("model", a.model), ("task", a.task), ("tenant", a.tenant))
        self.attempts: Labels = (
            ("error_class", a.error_class),
            ("model", a.model),
            ("outcome", a.outcome),
            ("provider", a.provider),
            ("task", a.task),
            ("tenant", a.tenant),
        )
        self.duration: Labels = (("model", a.model), ("outcome", a.outcome), ("provider", a.provider))
        self.ttft: Labels = (("model", a.model), ("provider", a.provider))
        self.tokens: tuple[Labels, ...] = tuple(
            (*self.base, ("type", kind)) for kind in ("input", "output", "cache_read", "cache_write")
        )


class PrometheusSink:
    """The lifecycle's records as series. Label keys are written in name order, as `Registry` keys them
    (sorting a dict per sample cost more than the sample itself)."""

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = r = registry or Registry()
        for name, kind, text in SERIES:
            r.describe(name, kind, text)
        # label tuples per distinct dimension set: building them was most of a sample's cost, and there are
        # no more of them than series the registry holds anyway
        self._attempt_keys: dict[tuple[str, ...], _AttemptKeys] = {}
        self._job_keys: dict[tuple[str, ...], tuple[Labels, Labels]] = {}

    def attempt(self, a: AttemptRecord, attempt: Attempt, job: Job) -> None:
        dims = (a.tenant, a.task, a.model, a.provider, a.outcome, a.error_class)
        k = self._attempt_keys.get(dims) or self._attempt_keys.setdefault(dims, _AttemptKeys(a))
        counts = [("alto_attempts_total", k.attempts, 1.0)]
        samples = [("alto_attempt_duration_seconds", k.duration, a.latency_s)]
        if a.ttft_s is not None:
            samples.append(("alto_time_to_first_token_seconds", k.ttft, a.ttft_s))
        for key, n in zip(
            k.tokens, (a.input_tokens, a.output_tokens, a.cache_read_tokens, a.cache_write_tokens), strict=True
        ):
            if n:
                counts.append(("alto_tokens_total", key, n))
        if a.cost_usd:
            counts.append(("alto_cost_usd_total", k.base, a.cost_usd))
        if a.fallback:
            counts.append(("alto_fallbacks_total", k.base, 1.0))
        self.registry.record(counts, samples)

    def job(self, j: JobRecord, job: Job) -> None:
        dims = (j.tenant, j.task, j.model, j.status)
        labels, hit = self._job_keys.get(dims) or self._job_keys.setdefault(
            dims,
            (
                (("model", j.model), ("status", j.status), ("task", j.task), ("tenant", j.tenant)),
                (("model", j.model), ("task", j.task), ("tenant", j.tenant)),
            ),
        )
        counts = [("alto_jobs_total", labels, 1.0), ("alto_job_attempts_total", labels, j.attempts)]
        if j.cache_hit:
            counts.append(("alto_cache_hits_total", hit, 1.0))
        self.registry.record(counts, (("alto_job_duration_seconds", labels, j.latency_s),))

    def picked(self, tenant: str, task: str, queue_age_s: float) -> None:
        self.registry.observe("alto_queue_age_seconds", (("task", task), ("tenant", tenant)), queue_age_s)

    def deferred(self, tenant: str, task: str, model: str) -> None:
        self.registry.inc("alto_deferrals_total", (("model", model), ("task", task), ("tenant", tenant)))

    def finding(self, tenant: str, task: str, rule: str, action: str) -> None:
        self.registry.inc(
            "alto_safety_findings_total", (("action", action), ("rule", rule), ("task", task), ("tenant", tenant))
        )

    def flush(self) -> None:
        return None
