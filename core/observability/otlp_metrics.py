"""Histograms aggregated in process and the OTLP/HTTP metric exporter the OpenTelemetry sink owns.

Why not the SDK's meter: its `record` builds a frozenset of the attributes, looks the series up through
two layers of views and locks, and offers the value to an exemplar reservoir; it measured 26 µs for one
attempt's three samples, the largest share of a job's observability cost. A GenAI histogram here has a
fixed set of bounds and a bounded attribute set, so a sample is a bisect and four additions under a lock.
A thread posts every series every OTEL_METRIC_EXPORT_INTERVAL (milliseconds, as the SDK reads it; 10 s
when unset) and at `flush`, cumulative by default; with
OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=delta (or lowmemory) each export carries what was
recorded since the last and the series start again, as the SDK's preference does for histograms.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

from core.observability import otlp_wire
from core.observability.otlp_export import Poster

# the GenAI conventions' advised bucket bounds (gen-ai-metrics.md), so backends render them as intended
TOKEN_BOUNDS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BOUNDS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
QUEUE_AGE_BOUNDS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
Attributes = tuple[tuple[str, Any], ...]


class Histogram:
    """One explicit-bucket histogram; a series per attribute set. Callers build each attribute dict in one
    fixed key order (as `OtelSink` does), so equal sets are equal keys without sorting per sample."""

    def __init__(self, name: str, unit: str, description: str, bounds: tuple[float, ...]) -> None:
        self.name, self.unit, self.description, self.bounds = name, unit, description, bounds
        self._packed_bounds = otlp_wire.packed_bounds(bounds)
        self._lock = threading.Lock()
        self._series: dict[Attributes, list[Any]] = {}  # per-bucket counts..., count, sum, min, max

    def record(self, value: float, attributes: dict[str, Any]) -> None:
        """The SDK histogram's signature, so the sink records the same way on either path."""
        i = bisect_left(self.bounds, value)  # the first bound >= value: OTLP buckets are (low, high]
        key = tuple(attributes.items())
        with self._lock:
            row = self._series.get(key)
            if row is None:
                row = self._series[key] = [0] * (len(self.bounds) + 3) + [value, value]
            row[i] += 1
            row[-4] += 1
            row[-3] += value
            if value < row[-2]:
                row[-2] = value
            elif value > row[-1]:
                row[-1] = value

    def take(self, reset: bool) -> dict[Attributes, list[Any]]:
        """A snapshot of every series; `reset` starts them again (delta temporality)."""
        with self._lock:
            if reset:
                series, self._series = self._series, {}
                return series
            return {k: list(v) for k, v in self._series.items()}

    def encoded(self, series: dict[Attributes, list[Any]], start_ns: int, now_ns: int, temporality: int) -> bytes:
        n = len(self.bounds) + 1
        points = [
            otlp_wire.histogram_point(
                attrs, start_ns, now_ns, row[:n], row[-4], row[-3], row[-2], row[-1], self._packed_bounds
            )
            for attrs, row in series.items()
        ]
        return otlp_wire.histogram(self.name, self.description, self.unit, temporality, points)


def _interval_s() -> float:
    raw = os.environ.get("OTEL_METRIC_EXPORT_INTERVAL", "")
    return float(raw) / 1000 if raw.strip() else 10.0


def _temporality() -> int:
    preference = os.environ.get("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "cumulative").strip().lower()
    return otlp_wire.TEMPORALITY_DELTA if preference in ("delta", "lowmemory") else otlp_wire.TEMPORALITY_CUMULATIVE


class MetricExporter:
    def __init__(
        self,
        url: str,
        resource: dict[str, Any],
        scope: str,
        histograms: Iterable[Histogram],
        *,
        interval_s: float | None = None,
    ) -> None:
        self.poster = Poster(url, "METRICS")
        self._resource = otlp_wire.resource(resource)
        self._scope = scope
        self.histograms = list(histograms)
        self.interval_s = _interval_s() if interval_s is None else interval_s
        self.temporality = _temporality()
        self._start_ns = time.time_ns()  # cumulative series start when this process began recording
        self._send = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alto-otlp-metrics", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()

    def flush(self) -> None:
        """Post every series now (the end of a serverless invocation calls this); nothing when none exist."""
        delta = self.temporality == otlp_wire.TEMPORALITY_DELTA
        with self._send:
            now_ns = time.time_ns()
            metrics, points = [], 0
            for h in self.histograms:
                series = h.take(reset=delta)
                if series:
                    metrics.append(h.encoded(series, self._start_ns, now_ns, self.temporality))
                    points += len(series)
            if delta:
                self._start_ns = now_ns  # the next delta starts where this one ended
            if metrics:
                self.poster.post(otlp_wire.request(self._resource, self._scope, metrics), points)

    def close(self) -> None:
        if self._stop.is_set():
            return  # closed already: at exit the collector may be gone, and cumulative series would be re-sent
        atexit.unregister(self.close)
        self._stop.set()
        self._thread.join(timeout=self.poster.timeout_s + 1)
        self.flush()
