"""Error classification by HTTP status and transport, per DESIGN.md.

Transient: 5xx, 529, timeouts, connection resets. Rate-limited: 429. Permanent: other 4xx and
content-policy refusals. A malformed reply is its own class. `x-should-retry` from the provider
overrides the status-based answer either way.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass

from core.errors import ProviderError
from core.models import ErrorClass

PERMANENT_STATUSES = frozenset({400, 401, 402, 403, 404, 405, 409, 413, 422})


@dataclass(frozen=True)
class Classification:
    error_class: ErrorClass
    retryable: bool
    retry_after_s: float | None = None


def parse_retry_after(headers: dict[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (delta seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        return max(0.0, parsed.timestamp() - (now if now is not None else time.time()))


def classify(error: BaseException) -> Classification:
    if not isinstance(error, ProviderError):
        # A bug or an unexpected exception inside a provider: don't burn money retrying it blindly,
        # but a crash-looping worker would redeliver anyway, so treat as transient and let the budget bound it.
        return Classification(ErrorClass.transient, retryable=True)
    if error.malformed:
        return Classification(ErrorClass.malformed, retryable=True)
    if error.content_policy or error.context_overflow or error.truncated:
        return Classification(ErrorClass.permanent, retryable=False)
    retry_after = parse_retry_after(error.headers)
    should_retry = error.headers.get("x-should-retry")
    if error.transport in ("timeout", "connection"):
        cls = ErrorClass.transient
    elif error.status_code == 429:
        cls = ErrorClass.rate_limited
    elif error.status_code is not None and (error.status_code >= 500 or error.status_code == 408):
        cls = ErrorClass.transient
    elif error.status_code is not None and 400 <= error.status_code < 500:
        cls = ErrorClass.permanent
    else:
        cls = ErrorClass.transient
    retryable = cls is not ErrorClass.permanent
    if should_retry == "true":
        retryable = True
        if cls is ErrorClass.permanent:
            cls = ErrorClass.transient
    elif should_retry == "false":
        retryable = False
        cls = ErrorClass.permanent
    return Classification(cls, retryable=retryable, retry_after_s=retry_after)
