"""OTLP/HTTP transport (`Poster`) and the span exporter the OpenTelemetry sink owns when an endpoint is set.

Spans arrive already encoded (`otlp_wire`), so the hot path pays an append; one daemon thread posts them
in batches of up to `batch` every `interval_s`, or as soon as a batch fills. The queue is bounded like the
SDK's batch processor (spans past `max_queue` are dropped and counted, never blocking a job). Every post
reads the same environment as the SDK's exporters: OTEL_EXPORTER_OTLP_[TRACES_|METRICS_]HEADERS (`k=v,k2=v2`, values
URL-encoded), _COMPRESSION (`gzip` or `none`), _TIMEOUT (seconds, as the Python SDK reads it) and
_CERTIFICATE (a CA bundle for TLS). A 429 or 502-504 is retried with backoff inside the timeout; any
other failure drops that batch with one log line, as the SDK does.
"""

from __future__ import annotations

import atexit
import gzip
import logging
import os
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from typing import Any
from urllib.parse import unquote

from core.logs import log_event
from core.observability import otlp_wire

RETRYABLE = {429, 502, 503, 504}


def _env(signal: str, name: str) -> str:
    return os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_{name}") or os.environ.get(f"OTEL_EXPORTER_OTLP_{name}", "")


def env_headers(signal: str = "TRACES") -> dict[str, str]:
    headers: dict[str, str] = {}
    for pair in _env(signal, "HEADERS").split(","):
        key, sep, value = pair.partition("=")
        if sep and key.strip():
            headers[unquote(key.strip()).lower()] = unquote(value.strip())
    return headers


class Poster:
    """One OTLP/HTTP endpoint for one signal (TRACES or METRICS): its headers, compression, timeout and TLS
    from the SDK's environment, and the retry policy every post follows."""

    def __init__(self, url: str, signal: str) -> None:
        self.url, self.signal = url, signal
        self.gzip = _env(signal, "COMPRESSION").strip().lower() == "gzip"
        self.timeout_s = float(_env(signal, "TIMEOUT") or 10)
        cafile = _env(signal, "CERTIFICATE")
        self._tls = ssl.create_default_context(cafile=cafile) if cafile else None
        self.headers = {**env_headers(signal), "content-type": "application/x-protobuf"}
        if self.gzip:
            self.headers["content-encoding"] = "gzip"

    def post(self, body: bytes, count: int) -> bool:
        """Send one export request, retrying what may pass; False (and one log line) when it was dropped."""
        data = gzip.compress(body) if self.gzip else body
        deadline, delay = time.monotonic() + self.timeout_s, 0.5
        while True:
            status, detail = self._send_once(data, max(0.1, deadline - time.monotonic()))
            if status is not None and 200 <= status < 300:
                return True
            retryable = status is None or status in RETRYABLE  # None: refused, reset or timed out
            if not retryable or time.monotonic() + delay > deadline:
                log_event(
                    "otel.export_failed",
                    logging.WARNING,
                    url=self.url,
                    status=status,
                    items=count,
                    signal=self.signal.lower(),
                    error=detail[:300],
                    hint="check observability.otel.endpoint and the collector's logs",
                )
                return False
            time.sleep(delay)
            delay *= 2

    def _send_once(self, data: bytes, timeout_s: float) -> tuple[int | None, str]:
        req = urllib.request.Request(self.url, data=data, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout_s, context=self._tls) as resp:
                resp.read()
                return resp.status, ""
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")
        except OSError as e:  # refused, reset or timed out: worth another try
            return None, repr(e)
        except ValueError as e:  # a malformed endpoint URL: no retry will fix it
            return 0, repr(e)


class SpanExporter:
    def __init__(
        self,
        url: str,
        resource: dict[str, Any],
        scope: str,
        *,
        batch: int = 512,
        max_queue: int = 2048,
        interval_s: float = 1.0,
    ) -> None:
        self.poster = Poster(url, "TRACES")
        self._resource = otlp_wire.resource(resource)
        self._scope = scope
        self.batch, self.max_queue, self.interval_s = batch, max_queue, interval_s
        self.dropped = 0
        self._queue: deque[bytes] = deque()
        self._wake = threading.Event()
        self._send = threading.Lock()  # one post at a time: a flush and the thread never interleave batches
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="alto-otlp-spans", daemon=True)
        self._thread.start()
        atexit.register(self.close)  # what is queued at exit is sent, as the SDK's provider does at shutdown

    def add(self, encoded_span: bytes) -> None:
        """Queue one encoded span; thread-safe (a deque append), never blocks."""
        if len(self._queue) >= self.max_queue:
            self.dropped += 1
            return
        self._queue.append(encoded_span)
        if len(self._queue) >= self.batch:
            self._wake.set()

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(self.interval_s)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Post everything queued now, in batches (the end of a serverless invocation calls this)."""
        with self._send:
            while self._queue:
                spans = [self._queue.popleft() for _ in range(min(self.batch, len(self._queue)))]
                self.poster.post(otlp_wire.request(self._resource, self._scope, spans), len(spans))

    def close(self) -> None:
        atexit.unregister(self.close)
        self._stopped = True
        self._wake.set()
        self._thread.join(timeout=self.poster.timeout_s + 1)
        self.flush()
