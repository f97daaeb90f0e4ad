"""Structured JSON logs with the trace id carried by a contextvar from submit to result.

Never pass secrets, raw API keys or raw prompts here: log hashes and ids.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

trace_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("alto_trace_id", default=None)
job_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("alto_job_id", default=None)

logger = logging.getLogger("altostratus")


REDACTED_FIELDS = ("body", "error", "message", "detail", "reason")


class JsonFormatter(logging.Formatter):
    redact_pii = False  # set by configure_logging from guardrails.redact_pii_in_logs

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            "logger": record.name,
        }
        trace_id = getattr(record, "trace_id", None) or trace_id_var.get()
        job_id = getattr(record, "job_id", None) or job_id_var.get()
        if trace_id:
            out["trace_id"] = trace_id
        if job_id:
            out["job_id"] = job_id
        fields = getattr(record, "fields", None)
        if fields:
            out.update(fields)
            if self.redact_pii:
                from core.redaction import redact

                for k in REDACTED_FIELDS:
                    if isinstance(out.get(k), str):
                        out[k] = redact(out[k])
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is at emit time: a host (or a test runner) that swaps stderr after
    start-up still gets the lines, and a closed earlier stream never turns an event into a logging error."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(level: str = "INFO", stream: Any = None, *, redact_pii: bool = False) -> None:
    """Idempotent: cloud runtimes call it once per process at handler build time."""
    JsonFormatter.redact_pii = redact_pii
    root = logging.getLogger("altostratus")
    root.setLevel(level)
    root.propagate = False
    if not any(getattr(h, "_alto", False) for h in root.handlers):
        handler = logging.StreamHandler(stream) if stream else _CurrentStderr()
        handler.setFormatter(JsonFormatter())
        handler._alto = True  # type: ignore[attr-defined]
        root.addHandler(handler)


def log_event(event: str, level: int = logging.INFO, **fields: Any) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={"fields": fields})


class Timer:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def ms(self) -> float:
        return round((time.perf_counter() - self.start) * 1000, 2)
